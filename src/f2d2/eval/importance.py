"""Self-normalised importance sampling (SNIS) of an unnormalised target with a model's samples and their log q.

Samples x (N, d) from a proposal q with their log q(x) (N,) in nats (``f2d2.sample(..., log_prob=True)``) and an
unnormalised target log p~(x) give the log weights log w = log p~(x) - log q(x) and

- ESS / N = (sum w)^2 / (N sum w^2), 1 when q = p~ / Z;
- log Z ~ log mean w, the log of the target's normaliser Z = integral p~;
- E_p[f] ~ sum w f(x) / sum w for the test functions ``TEST_FUNCTIONS``.

(``f2d2 importance`` draws the samples and times them: ``f2d2.cli.commands.timed_samples``.)
A target may be 0 off its support (log p~ = -inf, e.g. the checkerboard's indicator): such samples get weight 0
and count in N. NaN or +inf values of log p~, and non-finite log q, are refused.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from f2d2.core.likelihood import standard_normal_log_prob
from f2d2.core.sampling import sample
from f2d2.data.toy2d import Checkerboard
from f2d2.io.teacher import import_factory

# name -> f(x) (N,) of points x (N, d >= 2): the expectations SNIS estimates
TEST_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sq_norm": lambda x: x.square().sum(1),  # |x|^2
    "x1x2": lambda x: x[:, 0] * x[:, 1],  # x_1 x_2: 0 for a uniform square, not for the checkerboard
}


@dataclasses.dataclass(frozen=True)
class Target:
    """An unnormalised density: ``log_p(x)`` (N,) of points x (N, d), -inf where it is 0; ``log_z`` (log of its
    normaliser) and ``expectations`` ({test function: E_p[f]}) when known in closed form, else None."""

    name: str
    log_p: Callable[[torch.Tensor], torch.Tensor]
    log_z: float | None = None
    expectations: dict[str, float] | None = None


def checkerboard_target(scale: float = 2.0) -> Target:
    """The indicator of the checkerboard's support (``Checkerboard(scale)``: 8 squares of side ``scale`` in
    [-2 scale, 2 scale]^2): log p~ = 0 on it, -inf off it; Z = its area 8 scale^2 (log 32 at the default scale 2),
    E|x|^2 = 8 scale^2 / 3 (each coordinate is uniform on [-2 scale, 2 scale]) and E[x1 x2] = scale^2 / 4."""
    board = Checkerboard(scale)
    log_z = math.log(8 * board.scale**2)
    return Target(
        f"checkerboard (scale {board.scale:g})",
        lambda x: board.log_prob(x).double() + log_z,
        log_z,
        {"sq_norm": 8 * board.scale**2 / 3, "x1x2": board.scale**2 / 4},
    )


def function_target(spec: str) -> Target:
    """A user's unnormalised log-density ``"package.module:function"``, a callable from points x (N, d) to log p~
    (N,) (-inf where p~ = 0); its normaliser and expectations are unknown (None)."""
    return Target(spec, import_factory(spec, key="--target-fn"))


def _check_points(x: torch.Tensor, log_q: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or len(x) == 0 or x.shape[1] < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"samples x have shape {shape}; expected points (N >= 1, d >= 2)")
    if not isinstance(log_q, torch.Tensor) or tuple(log_q.shape) != (len(x),):
        shape = tuple(log_q.shape) if isinstance(log_q, torch.Tensor) else type(log_q).__name__
        raise ValueError(f"log q has shape {shape}; expected one value per sample, ({len(x)},)")
    bad = ~torch.isfinite(log_q)
    if bad.any():
        raise ValueError(
            f"log q is not finite at {int(bad.sum())} of {len(x)} samples (first: sample {int(bad.nonzero()[0])})"
        )


def log_weights(x: torch.Tensor, log_q: torch.Tensor, log_p: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """log w = log p~(x) - log q(x), float64 (N,), of samples x (N, d) with log q (N,); -inf where p~ is 0."""
    _check_points(x, log_q)
    lp = log_p(x)
    if not isinstance(lp, torch.Tensor) or tuple(lp.shape) != (len(x),):
        shape = tuple(lp.shape) if isinstance(lp, torch.Tensor) else type(lp).__name__
        raise ValueError(f"the target's log p~ returned shape {shape}; expected one value per sample, ({len(x)},)")
    lp = lp.detach().double().to(log_q.device)
    bad = torch.isnan(lp) | (lp == math.inf)
    if bad.any():
        raise ValueError(
            f"the target's log p~ is NaN or +inf at {int(bad.sum())} of {len(x)} samples (first: sample "
            f"{int(bad.nonzero()[0])}); expected finite values, or -inf where the density is 0"
        )
    if lp.isneginf().all():
        raise ValueError(f"the target's log p~ is -inf at all {len(x)} samples: no sample lies on its support")
    return lp - log_q.detach().double()


def snis(x: torch.Tensor, log_q: torch.Tensor, target: Target) -> dict:
    """SNIS of ``target`` with samples x (N, d) and their log q (N,): ``ess_per_sample``, ``log_z_estimate``,
    ``support_share`` (share of samples with p~ > 0) and ``expectations`` {test function: {estimate, true}}; with
    ``log_z_true`` and the absolute errors where the target knows the truth (else None)."""
    lw = log_weights(x, log_q, target.log_p)
    n = len(lw)
    lse = torch.logsumexp(lw, 0)
    ess = float(torch.exp(2 * lse - torch.logsumexp(2 * lw, 0)) / n)
    log_z = float(lse - math.log(n))
    w = torch.softmax(lw, 0)  # 0 where log w = -inf
    xd = x.detach().double().to(w.device)
    truths = target.expectations or {}
    expectations = {}
    for name, f in TEST_FUNCTIONS.items():
        estimate, true = float((w * f(xd)).sum()), truths.get(name)
        expectations[name] = {
            "estimate": estimate,
            "true": true,
            "abs_err": None if true is None else abs(estimate - true),
        }
    return {
        "ess_per_sample": ess,
        "log_z_estimate": log_z,
        "log_z_true": target.log_z,
        "log_z_abs_err": None if target.log_z is None else abs(log_z - target.log_z),
        "support_share": float(torch.isfinite(lw).double().mean()),
        "expectations": expectations,
    }


def sampler_log_density(model: torch.nn.Module, x0: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact density of the K-step sampler x1 = F(x0) at its own samples, for points of few dimensions:
    log q_F(x1) = log N(x0; 0, I) - log |det dF/dx0| (change of variables), float64 (N,), with the Jacobian (N, d, d)
    by autograd; and a bool (N,) marking where det dF/dx0 <= 0 (the map folds space there, and other noise maps to
    the same x1, so the value is only the density of this branch). x0 (N, d) noise at t = 0."""
    if x0.dim() != 2 or x0.shape[1] > 16:
        raise ValueError(f"noise x0 has shape {tuple(x0.shape)}; expected points (N, d) with d <= 16")
    jac = torch.func.vmap(torch.func.jacrev(lambda z: sample(model, z[None], steps, grad=True)[0]))(x0)
    sign, log_abs_det = torch.linalg.slogdet(jac.double())
    return standard_normal_log_prob(x0).double() - log_abs_det, sign <= 0
