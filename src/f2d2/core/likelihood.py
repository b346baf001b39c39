"""Log-likelihood of data points under a flow (t = 1 data, integrated back to t = 0 noise).

Two integrators, both per point:

- ``log_likelihood``: K uniform steps of ``flow_map_step`` from t = 1 to t = 0;
  with ``div="head"`` the F2D2 few-step likelihood, with ``"exact"``/``"hutchinson"``
  the Euler baseline of the paper's tables.
- ``reference_log_likelihood``: the adaptive (dopri5) solve of the joint ODE with
  the instantaneous velocity u(x, t, t), the yardstick ("teacher") likelihood.

Both return log p_1(x1) = log N(x0; 0, I) - integral_0^1 div v(x_t, t) dt in nats, shape (B,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from f2d2.core.divergence import divergence, hutchinson_probe
from f2d2.core.flowmap import flow_map_step
from f2d2.nets import FlowMapNet


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) per row of x (B, *shape), shape (B,)."""
    flat = x.reshape(x.shape[0], -1)
    return -0.5 * flat.pow(2).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def time_grid(steps: int, *, start: float = 1.0, end: float = 0.0) -> list[float]:
    """K + 1 uniformly spaced times from ``start`` to ``end``."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"number of steps K = {steps!r}; expected an integer >= 1")
    return [start + (end - start) * k / steps for k in range(steps + 1)]


@dataclass
class LikelihoodResult:
    """``log_prob`` (B,) in nats; ``x0`` (B, *shape) the point reached at t = 0; ``nfe`` model evaluations."""

    log_prob: torch.Tensor
    x0: torch.Tensor
    nfe: int


@torch.no_grad()
def log_likelihood(
    model: FlowMapNet,
    x1: torch.Tensor,
    steps: int,
    *,
    div: str = "head",
    backward: str = "two-way",
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """K-step likelihood of data x1 (B, *shape): ``steps`` flow-map steps from t = 1 to t = 0."""
    grid = time_grid(steps)
    x, total = x1, torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)
    for s, t in zip(grid[:-1], grid[1:]):
        x, dlogp = flow_map_step(model, x, s, t, div=div, backward=backward, generator=generator)
        total = total + dlogp
    # total = log p_0(x0) - log p_1(x1)
    return LikelihoodResult(standard_normal_log_prob(x) - total, x, steps)


def check_tolerances(atol: float, rtol: float) -> None:
    """Raise before any solve if an adaptive solver's tolerances are not positive."""
    if not (atol > 0 and rtol > 0):
        raise ValueError(f"reference solver tolerances must be > 0; got atol={atol!r}, rtol={rtol!r}")


def reference_log_likelihood(
    model: FlowMapNet,
    x1: torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    method: str = "dopri5",
    div: str = "exact",
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """Adaptive solve of dx/dt = v(x, t), da/dt = div v(x, t) from t = 1 (a = 0) to t = 0.

    Then log p_1(x1) = log N(x0) + a(0). ``div="hutchinson"`` draws one probe per
    point and keeps it fixed through the solve.
    """
    check_tolerances(atol, rtol)
    probe: str | torch.Tensor = "rademacher"
    if div == "hutchinson":
        probe = hutchinson_probe(x1, "rademacher", generator)
    nfe = 0

    def rhs(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        nonlocal nfe
        nfe += 1
        x = state[0]
        tt = t.expand(x.shape[0]).to(x.dtype)
        v, dv = divergence(lambda y: model.velocity(y, tt), x, div, probe=probe)
        return v, dv

    a0 = torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)
    times = torch.tensor([1.0, 0.0], dtype=x1.dtype, device=x1.device)
    from torchdiffeq import odeint  # here: it loads scipy.integrate (most of a second)

    xs, accs = odeint(rhs, (x1, a0), times, atol=atol, rtol=rtol, method=method)
    x0 = xs[-1].detach()
    return LikelihoodResult(standard_normal_log_prob(x0) + accs[-1].detach(), x0, nfe)
