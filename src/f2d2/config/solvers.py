"""The fixed-grid solvers of the joint ODE and their model evaluations per step, torch-free so that the config's
cells, the CLI parser and the gather scripts name them from the one table that ``f2d2.core.likelihood`` runs
(torchdiffeq's methods; its "rk4" is the 3/8-rule RK4)."""

FIXED_GRID_SOLVERS = {"euler": 1, "midpoint": 2, "rk4": 4}
