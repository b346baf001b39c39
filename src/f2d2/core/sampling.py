"""Sampling forward from noise (t = 0) to data (t = 1).

- ``sample``: K uniform flow-map steps (Euler steps of the velocity for a flow-matching model).
- ``reference_sample``: the adaptive (dopri5) solve of dx/dt = u(x, t, t), the yardstick for
  sample quality as ``likelihood.reference_log_likelihood`` is for likelihoods.
"""

from __future__ import annotations

import torch

from f2d2.core.flowmap import flow_map_step
from f2d2.core.likelihood import check_tolerances, time_grid
from f2d2.nets import FlowMapNet


@torch.no_grad()
def sample(model: FlowMapNet, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """Push noise x0 (B, *shape) through ``steps`` uniform steps; returns x1 of the same shape."""
    grid = time_grid(steps, start=0.0, end=1.0)
    x = x0
    for s, t in zip(grid[:-1], grid[1:]):
        x, _ = flow_map_step(model, x, s, t)
    return x


@torch.no_grad()
def reference_sample(
    model: FlowMapNet, x0: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-5, method: str = "dopri5"
) -> torch.Tensor:
    """Solve dx/dt = v(x, t) from noise x0 (B, *shape) at t = 0 to t = 1; returns x1 of the same shape."""
    check_tolerances(atol, rtol)

    def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return model.velocity(x, t.expand(x.shape[0]).to(x.dtype))

    times = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
    from torchdiffeq import odeint  # here: it loads scipy.integrate (most of a second)

    return odeint(rhs, x0, times, atol=atol, rtol=rtol, method=method)[-1]
