"""Table 7: mean per-point |NLL - reference NLL| (nats) per method, K = 8, 4, 2, 1.

The value is recomputed from the per-point CSVs (``K{k}.csv`` beside each cell JSON,
``reference.csv`` beside the reference) and checked against the JSON's
``mean_abs_err_nats``. Column ``reference`` says what the row is compared with: ``teacher`` (the
teacher's dopri5 solve, every run) or ``own flow`` (the dopri5 solve of the velocity whose divergence the
run's head learned, an extra row for each run with div_source self: the run's own velocity, or with
self_source start its frozen warm start's, ``experiment.own_flow_source``). Beyond the paper, which integrates
the teacher with Euler steps only, a row per fixed-step solver of eval.teacher_solvers: the reference teacher's
midpoint or RK4 solve with K model evaluations per point in column K (K / 2 midpoint or K / 4 RK4 steps; empty
where K is not a multiple), labelled "<teacher> (midpoint, K evaluations)".
Snakemake: input.nll (flat list of JSON cells), input.reference, input.own_references (the own-flow
reference JSONs, in params.own_flow order), input.test_split (``f2d2 data --summary``'s JSON: the last
column, ``test_split``, says where the test points come from); params.methods, params.own_flow,
params.steps, params.config, params.labels ({run: label}, the method column); input.training (every
run's ``train.json``: columns ``trained_steps`` and ``early_stop_step``); input.solver_nll (the solver cells'
JSONs, ``.../<teacher>/<solver>_K<k>.json``), params.teacher; output[0] the CSV.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import common  # noqa: E402
from f2d2.eval.metrics import nll_error  # noqa: E402

# The CSVs hold 9 significant digits, so a recomputed mean can differ from the JSON's
# (computed before rounding) by about 1e-9 x |NLL|; that much is allowed on top of RTOL.
RTOL = 1e-6
CSV_DIGITS_TOL = 1e-9


class CellMismatch(ValueError):
    """A cell's JSON summary disagrees with its per-point CSV."""


def abs_err(nll_csv, reference_csv) -> tuple[float, float]:
    """(mean |nll - ref|, largest |NLL| in either) from two per-point CSVs of equal length."""
    a = common.read_points_csv(nll_csv)["nll_nats"].to_numpy()
    b = common.read_points_csv(reference_csv)["nll_nats"].to_numpy()
    if len(a) != len(b):
        raise CellMismatch(f"{nll_csv} has {len(a)} points but {reference_csv} has {len(b)}")
    return nll_error(a, b), float(max(np.max(np.abs(a)), np.max(np.abs(b))))


def checked_abs_err(cell_json, reference_csv, rtol: float = RTOL) -> float:
    """The recomputed mean |NLL - reference|; raises CellMismatch if the cell JSON says otherwise."""
    csv = common.sibling_csv(cell_json)
    value, scale = abs_err(csv, reference_csv)
    stated = float(common.cell_value(common.read_json(cell_json), "mean_abs_err_nats", cell_json))
    if not math.isclose(value, stated, rel_tol=rtol, abs_tol=CSV_DIGITS_TOL * scale):
        raise CellMismatch(
            f"{cell_json}: mean_abs_err_nats = {stated!r} but {csv} vs {reference_csv} gives "
            f"{value!r} (relative difference {abs(value - stated) / max(abs(stated), 1e-300):.3g}, "
            f"allowed {rtol:g}); the cell files are inconsistent"
        )
    return value


def main(
    nll_cells: dict,
    reference: str,
    methods: list[str],
    steps: list[int],
    config: str,
    out: str,
    rtol: float = RTOL,
    test_split: str | None = None,
    own_references: dict[str, str] | None = None,
    training: dict[str, str] | None = None,
    solver_cells: dict[str, dict[int, str]] | None = None,
    teacher: str | None = None,
    *,
    labels: dict[str, str],
) -> pd.DataFrame:
    """Build Table 7 from NLL cells keyed by (run, k) and the reference JSON; write ``out`` (CSV). ``labels``
    {run: label} names the methods.
    ``own_references`` {run: its own flow's reference JSON} adds a row per run, after the run's own,
    with its error against that reference. With ``test_split`` (the JSON's path) a last column says
    where the test points come from; with ``training`` ({run: train.json}) columns say how each run's
    training ended (``trained_steps``, ``early_stop_step``). ``solver_cells`` {solver: {K: cell JSON}} adds a
    row per solver of the reference ``teacher`` (a run among the methods), K being its model evaluations."""
    steps = common.descending(steps)
    ref_csv = common.sibling_csv(reference)
    own = {run: common.sibling_csv(path) for run, path in (own_references or {}).items()}
    if unknown := sorted(set(own) - set(methods)):
        raise ValueError(f"own-flow references for {unknown}, which are not among the methods {methods}")
    cols = ["method", "run", "reference"] + [f"K{k}_abs_err_nats" for k in steps]
    cols += list(common.TRAINING_COLUMNS if training is not None else ()) + ["config", "seed"]
    extra = {} if test_split is None else {"test_split": common.test_split(test_split)}
    cols += list(extra)
    rows = []

    def fill(row: dict, k: int, read: dict) -> None:
        row[f"K{k}_abs_err_nats"] = checked_abs_err(read["NLL"][0], ref_csv, rtol)

    def fill_own(row: dict, k: int, read: dict) -> None:
        row[f"K{k}_abs_err_nats"] = abs_err(common.sibling_csv(read["NLL"][0]), own[row["run"]])[0]

    for run in methods:
        ended = common.training_columns(run, training)
        row = common.method_row(run, steps, {"NLL": nll_cells}, fill, labels)
        rows.append({**row, "reference": "teacher", **ended, "config": config, **extra})
        if run in own:
            row = common.method_row(run, steps, {"NLL": nll_cells}, fill_own, labels)
            rows.append({**row, "reference": "own flow", **ended, "config": config, **extra})
    for solver, by_k in (solver_cells or {}).items():
        if teacher not in methods:
            raise ValueError(f"solver rows of teacher {teacher!r}, which is not among the methods {methods}")
        if unknown := sorted(set(by_k) - set(steps)):
            raise ValueError(f"{solver} cells at K = {unknown}, which are not among the steps {steps}")
        label = f"{common.method_label(teacher, labels)} ({solver}, K evaluations)"
        row = {"method": label, "run": teacher, "reference": "teacher"}
        for k, path in by_k.items():
            row[f"K{k}_abs_err_nats"] = checked_abs_err(path, ref_csv, rtol)
        row["seed"] = common.train_seed((path, common.read_json(path)) for path in by_k.values())
        rows.append({**row, **common.training_columns(teacher, training), "config": config, **extra})
    df = pd.DataFrame(rows, columns=cols)
    common.write_csv(df, out)
    return df


if "snakemake" in globals():
    _methods, _steps = list(snakemake.params.methods), [int(k) for k in snakemake.params.steps]
    main(
        common.cells_from_paths(snakemake.input.nll, _methods, _steps),
        str(snakemake.input.reference),
        _methods,
        _steps,
        common.project_path(snakemake.params.config),
        str(snakemake.output[0]),
        test_split=str(snakemake.input.test_split),
        own_references=dict(zip(snakemake.params.own_flow, map(str, snakemake.input.own_references), strict=True)),
        training=common.training_inputs(snakemake.input.training),
        solver_cells=common.solver_cells(snakemake.input.solver_nll),
        teacher=str(snakemake.params.teacher),
        labels=dict(snakemake.params.labels),
    )
