"""Log-likelihood of data points under a flow (t = 1 data, integrated back to t = 0 noise).

Two integrators, both per point, each built on one walk that tracks the log-density in either
direction (``core.sampling`` runs the same walks forward, from noise to data):

- ``log_likelihood``: K uniform steps of ``flow_map_step`` (``integrate``) from t = 1 to t = 0;
  with ``div="head"`` the F2D2 few-step likelihood, with ``"exact"``/``"hutchinson"``
  the Euler baseline of the paper's tables.
- ``reference_log_likelihood``: a torchdiffeq solve of the joint ODE (``solve_joint_ode``) with the
  instantaneous velocity u(x, t, t): adaptive (dopri5, the yardstick "teacher" likelihood) or, with
  ``steps``, a fixed-grid Euler, midpoint or RK4 solve (the stronger baselines of the speed-accuracy frontier).

Both return log p_1(x1) = log N(x0; 0, I) - integral_0^1 div v(x_t, t) dt in nats, shape (B,); no
gradients are tracked unless ``grad=True``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from f2d2.config.solvers import FIXED_GRID_SOLVERS
from f2d2.core.divergence import divergence, hutchinson_probe
from f2d2.core.flowmap import flow_map_step
from f2d2.nets import FlowMapNet


@contextmanager
def parameters_frozen(module: torch.nn.Module):
    """Within: ``module``'s parameters do not require gradients (restored after, also on an error). A divergence
    needs vector-Jacobian products in x alone; with the parameters frozen the forward pass records no graph to them
    (the default run's teacher: a 1,000-point dopri5 solve 0.427 -> 0.412 s, 3.5% less, on an idle CPU)."""
    thawed = [p for p in module.parameters() if p.requires_grad]
    for p in thawed:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in thawed:
            p.requires_grad_(True)


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


def integrate(
    model: FlowMapNet,
    x: torch.Tensor,
    grid: list[float],
    *,
    div: str | None = None,
    backward: str = "two-way",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``flow_map_step`` through the times ``grid`` (either direction) from x (B, *shape), in the caller's grad mode.

    Returns (x at grid[-1], delta) with delta (B,) = log p_{grid[-1]}(x_end) - log p_{grid[0]}(x), the summed
    log-density changes of the steps, or None when div is None (no density tracked).
    """
    delta = None if div is None else x.new_zeros(x.shape[0])
    for s, t in zip(grid[:-1], grid[1:]):
        x, dlogp = flow_map_step(model, x, s, t, div=div, backward=backward, generator=generator)
        if delta is not None:
            delta = delta + dlogp
    return x, delta


def log_likelihood(
    model: FlowMapNet,
    x1: torch.Tensor,
    steps: int,
    *,
    div: str = "head",
    backward: str = "two-way",
    generator: torch.Generator | None = None,
    grad: bool = False,
) -> LikelihoodResult:
    """K-step likelihood of data x1 (B, *shape): ``steps`` flow-map steps from t = 1 to t = 0.

    ``grad``: keep the autograd graph to x1 and the parameters; by default no gradients are tracked.
    """
    with torch.set_grad_enabled(grad), nullcontext() if grad else parameters_frozen(model):
        x0, delta = integrate(model, x1, time_grid(steps), div=div, backward=backward, generator=generator)
        # delta = log p_0(x0) - log p_1(x1)
        return LikelihoodResult(standard_normal_log_prob(x0) - delta, x0, steps)


ADAPTIVE_SOLVERS = ("dopri5", "bosh3", "adaptive_heun", "dopri8")


def check_solver(method: str, steps: int | None) -> None:
    """Raise before any solve unless ``method`` is fixed-grid with ``steps`` >= 1 or adaptive without steps."""
    if method in FIXED_GRID_SOLVERS:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"solver {method!r} is fixed-grid: it needs steps = an integer >= 1, got {steps!r}")
    elif method in ADAPTIVE_SOLVERS:
        if steps is not None:
            raise ValueError(f"solver {method!r} is adaptive (atol, rtol): steps must be None, got {steps!r}")
    else:
        raise ValueError(
            f"ODE solver {method!r} is unknown; expected one of {[*FIXED_GRID_SOLVERS, *ADAPTIVE_SOLVERS]}"
        )


def check_tolerances(atol: float, rtol: float) -> None:
    """Raise before any solve if an adaptive solver's tolerances are not positive."""
    if not (atol > 0 and rtol > 0):
        raise ValueError(f"reference solver tolerances must be > 0; got atol={atol!r}, rtol={rtol!r}")


def solve_joint_ode(
    model: FlowMapNet,
    x: torch.Tensor,
    start: float,
    end: float,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    method: str = "dopri5",
    steps: int | None = None,
    div: str = "exact",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Solve dx/dt = v(x, t), da/dt = div v(x, t) with a(start) = 0, from x (B, *shape) at ``start``: adaptive
    (``method`` dopri5, ..., with atol, rtol) or fixed-grid (euler, midpoint, rk4: ``steps`` uniform steps).

    Returns (x at ``end``, a(end) = integral_start^end div v dt (B,), nfe), in the caller's grad mode (with
    gradients on, the divergence keeps its graph; off, the model's parameters are frozen during the solve).
    ``div="hutchinson"`` draws one probe per point and keeps it fixed through the solve.
    """
    check_solver(method, steps)
    check_tolerances(atol, rtol)
    probe: str | torch.Tensor = "rademacher"
    if div == "hutchinson":
        probe = hutchinson_probe(x, "rademacher", generator)
    nfe = 0

    def rhs(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        nonlocal nfe
        nfe += 1
        y = state[0]
        tt = t.expand(y.shape[0]).to(y.dtype)
        return divergence(lambda z: model.velocity(z, tt), y, div, probe=probe, create_graph=torch.is_grad_enabled())

    a0 = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    times = torch.tensor([start, end], dtype=x.dtype, device=x.device)
    from torchdiffeq import odeint  # here: it loads scipy.integrate (most of a second)

    options = {}
    if steps is not None:  # the grid itself, not a step size: no rounding can add or drop a step
        options["grid_constructor"] = lambda func, y0, t: torch.linspace(
            t[0], t[-1], steps + 1, dtype=t.dtype, device=t.device
        )
    with nullcontext() if torch.is_grad_enabled() else parameters_frozen(model):
        xs, accs = odeint(rhs, (x, a0), times, atol=atol, rtol=rtol, method=method, options=options)
    return xs[-1], accs[-1], nfe


def probe_averaged_solve(
    model: FlowMapNet,
    x: torch.Tensor,
    start: float,
    end: float,
    *,
    tol: float = 1e-5,
    probes: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``solve_joint_ode`` with dopri5 at atol = rtol = ``tol``, no gradients: (x at ``end``, a (B,) float64 =
    integral_start^end div v dt) with the exact divergence, or with ``probes`` > 0 the mean of a over that many
    solves with independent Hutchinson probes from ``generator`` (the path does not depend on the probe, so the mean
    converges to the exact divergence's integral; for data of many dimensions)."""
    if probes < 0:
        raise ValueError(f"probes = {probes!r}; expected 0 (exact divergence) or a number of Hutchinson probes")
    with torch.no_grad():
        if probes == 0:
            x_end, a, _ = solve_joint_ode(model, x, start, end, atol=tol, rtol=tol)
            return x_end, a.double()
        total = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        for _ in range(probes):
            x_end, a, _ = solve_joint_ode(
                model, x, start, end, atol=tol, rtol=tol, div="hutchinson", generator=generator
            )
            total += a.double()
        return x_end, total / probes


def reference_log_likelihood(
    model: FlowMapNet,
    x1: torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    method: str = "dopri5",
    steps: int | None = None,
    div: str = "exact",
    generator: torch.Generator | None = None,
    grad: bool = False,
) -> LikelihoodResult:
    """The joint ODE (``solve_joint_ode``) from data x1 (B, *shape) at t = 1 back to t = 0: the adaptive dopri5
    reference, or another ``method`` (a fixed-grid one with ``steps``).

    Then log p_1(x1) = log N(x0) + a(0), with a(0) = -integral_0^1 div v dt. ``grad``: keep the autograd graph
    (backpropagation through the solver's steps); by default no gradients are tracked.
    """
    with torch.set_grad_enabled(grad):
        x0, a, nfe = solve_joint_ode(
            model, x1, 1.0, 0.0, atol=atol, rtol=rtol, method=method, steps=steps, div=div, generator=generator
        )
        return LikelihoodResult(standard_normal_log_prob(x0) + a, x0, nfe)


def log_likelihood_or_reference(
    model: FlowMapNet,
    x1: torch.Tensor,
    steps: int | None,
    *,
    div: str,
    backward: str = "two-way",
    generator: torch.Generator | None = None,
    grad: bool = False,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> torch.Tensor:
    """log p_1(x1) (B,) in nats of data x1 (B, *shape): ``log_likelihood`` in K = ``steps`` steps or, for None, the
    dopri5 ``reference_log_likelihood`` (tolerances atol, rtol)."""
    if steps is None:
        return reference_log_likelihood(
            model, x1, atol=atol, rtol=rtol, div=div, generator=generator, grad=grad
        ).log_prob
    return log_likelihood(model, x1, steps, div=div, backward=backward, generator=generator, grad=grad).log_prob
