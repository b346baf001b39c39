"""Sampling forward from noise (t = 0) to data (t = 1), optionally with each sample's log-density.

- ``sample``: K uniform flow-map steps (Euler steps of the velocity for a flow-matching model).
- ``reference_sample``: the adaptive (dopri5) solve of dx/dt = u(x, t, t), the yardstick for
  sample quality as ``likelihood.reference_log_likelihood`` is for likelihoods.
- ``sample_log_prob`` / ``reference_sample_log_prob``: the same forward from noise with the joint
  log-density, log q(x1) = log N(x0; 0, I) - integral_0^1 div v(x_t, t) dt in nats, (B,), along the very
  steps that produce x1 (the likelihood module's walks, run from t = 0 to t = 1).
- ``sample_in_batches``: any of these batch by batch, each batch optionally self-guided first (what
  ``f2d2.sample`` and ``f2d2 sample`` run); with ``log_prob_from="sample"`` the log-density is instead the
  likelihood of each returned sample (K backward steps from it or the reference,
  ``likelihood.log_likelihood_or_reference``).

Which log q: along the forward steps an F2D2 head gives the density change of the path it was trained on (the
teacher's, from that noise), so log q is about the teacher's density at the teacher's endpoint, not at the sample
the jump produced; where the map's endpoint error meets a steep density (a square's edge) they differ by nats.
From the sample, log q is the model's likelihood of the point returned (about the teacher's density there). Neither
is the exact density of the few-step sampler, whose map stretches space unevenly (in 2D: the log-determinant of its
Jacobian).

No gradients are tracked unless ``grad=True``.
"""

from __future__ import annotations

import torch

from f2d2.core.guidance import Guidance, self_guided_noise
from f2d2.core.likelihood import (
    check_tolerances,
    integrate,
    log_likelihood_or_reference,
    solve_joint_ode,
    standard_normal_log_prob,
    time_grid,
)
from f2d2.core.options import LOG_PROB_FROM
from f2d2.nets import FlowMapNet


def sample(model: FlowMapNet, x0: torch.Tensor, steps: int, *, grad: bool = False) -> torch.Tensor:
    """Push noise x0 (B, *shape) through ``steps`` uniform steps; returns x1 of the same shape."""
    with torch.set_grad_enabled(grad):
        return integrate(model, x0, time_grid(steps, start=0.0, end=1.0))[0]


def sample_log_prob(
    model: FlowMapNet,
    x0: torch.Tensor,
    steps: int,
    *,
    div: str,
    generator: torch.Generator | None = None,
    grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` uniform forward steps from noise x0 (B, *shape); returns (x1, log q(x1)) with log q (B,) in nats.

    ``div="head"``: flow-map jumps, the density change from the head (the same x1 as ``sample``);
    ``"exact"``/``"hutchinson"``: Euler steps of the joint ODE with the instantaneous velocity u(x, t, t).
    """
    with torch.set_grad_enabled(grad):
        x1, delta = integrate(model, x0, time_grid(steps, start=0.0, end=1.0), div=div, generator=generator)
        # delta = log q_1(x1) - log p_0(x0)
        return x1, standard_normal_log_prob(x0) + delta


def reference_sample(
    model: FlowMapNet,
    x0: torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    method: str = "dopri5",
    grad: bool = False,
) -> torch.Tensor:
    """Solve dx/dt = v(x, t) from noise x0 (B, *shape) at t = 0 to t = 1; returns x1 of the same shape."""
    check_tolerances(atol, rtol)

    def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return model.velocity(x, t.expand(x.shape[0]).to(x.dtype))

    times = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
    from torchdiffeq import odeint  # here: it loads scipy.integrate (most of a second)

    with torch.set_grad_enabled(grad):
        return odeint(rhs, x0, times, atol=atol, rtol=rtol, method=method)[-1]


def reference_sample_log_prob(
    model: FlowMapNet,
    x0: torch.Tensor,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    method: str = "dopri5",
    div: str = "exact",
    generator: torch.Generator | None = None,
    grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint ODE from noise x0 (B, *shape) at t = 0 to t = 1; returns (x1, log q(x1)), log q (B,) in nats.

    Its adaptive steps also control the log-density's error, so x1 matches ``reference_sample`` only to the
    solver's tolerance.
    """
    with torch.set_grad_enabled(grad):
        x1, a, _ = solve_joint_ode(
            model, x0, 0.0, 1.0, atol=atol, rtol=rtol, method=method, div=div, generator=generator
        )
        return x1, standard_normal_log_prob(x0) - a


def sample_in_batches(
    model: FlowMapNet,
    x0: torch.Tensor,
    steps: int | None,
    *,
    div: str | None = None,
    log_prob_from: str = "noise",
    guidance: Guidance | None = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise x0 (B, *shape) to samples x1, ``batch_size`` rows at a time (default all); returns (x1, log q or None).

    Each batch is first self-guided (``guidance``; the guided noise is a constant to what follows), then pushed
    through ``steps`` uniform steps or, for None, the adaptive reference (tolerances ``atol``, ``rtol``). With
    ``div`` the log-density log q(x1) (B,) in nats comes along, Hutchinson probes from ``generator``:
    ``log_prob_from="noise"``: the joint density along the same forward steps (``sample_log_prob`` /
    ``reference_sample_log_prob``); ``"sample"``: x1 from the plain steps (a flow map's own jumps), then its
    likelihood by K backward steps from it (two-way) or the reference solve back to t = 0
    (``log_likelihood_or_reference``),
    which costs another K evaluations (or a second solve).
    """
    if log_prob_from not in LOG_PROB_FROM:
        raise ValueError(f"log_prob_from = {log_prob_from!r}; expected one of {list(LOG_PROB_FROM)}")
    xs, log_qs = [], []
    for chunk in x0.split(batch_size or max(1, x0.shape[0])):
        if guidance is not None and guidance.steps:
            chunk = self_guided_noise(model, chunk, lr=guidance.lr, steps=guidance.steps)
        if div is None or log_prob_from == "sample":
            if steps is None:
                x1 = reference_sample(model, chunk, atol=atol, rtol=rtol, grad=grad)
            else:
                x1 = sample(model, chunk, steps, grad=grad)
            xs.append(x1)
            if div is not None:
                log_qs.append(
                    log_likelihood_or_reference(
                        model, x1, steps, div=div, generator=generator, grad=grad, atol=atol, rtol=rtol
                    )
                )
            continue
        if steps is None:
            x1, log_q = reference_sample_log_prob(
                model, chunk, atol=atol, rtol=rtol, div=div, generator=generator, grad=grad
            )
        else:
            x1, log_q = sample_log_prob(model, chunk, steps, div=div, generator=generator, grad=grad)
        xs.append(x1)
        log_qs.append(log_q)
    return torch.cat(xs), (torch.cat(log_qs) if div is not None else None)
