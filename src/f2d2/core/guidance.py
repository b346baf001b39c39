"""Maximum-likelihood self-guidance (the paper's Algorithm 2).

The one-step predicted log-likelihood of the sample that noise eps generates,
log p(X_{0,1}(eps)) = log N(eps; 0, I) - c D(eps, 0, 1), is maximised over eps by a
few Adam steps before ordinary K-step sampling. Cost: one forward and one backward
pass of the flow map per Adam step. Needs an F2D2 model (a divergence head).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from f2d2.core.flowmap import flow_map_step
from f2d2.core.likelihood import standard_normal_log_prob
from f2d2.nets import FlowMapNet


def predicted_log_likelihood(model: FlowMapNet, eps: torch.Tensor) -> torch.Tensor:
    """log p_1 of X_{0,1}(eps) from one forward flow-map step; eps (B, *shape) -> (B,), differentiable in eps."""
    _, dlogp = flow_map_step(model, eps, 0.0, 1.0, div="head")
    return standard_normal_log_prob(eps) + dlogp


@dataclass(frozen=True)
class Guidance:
    """Self-guidance settings: ``steps`` Adam steps of learning rate ``lr`` on the noise (``f2d2 sample
    --guidance-steps/--guidance-lr``)."""

    lr: float
    steps: int = 1


def check_guidance(model: FlowMapNet, guidance: Guidance) -> None:
    """Refuse, before any work, guidance that the model or its settings cannot serve (ValueError)."""
    if not model.has_div_head:
        raise ValueError("self-guidance needs an F2D2 model with a divergence head")
    lr, steps = guidance.lr, guidance.steps
    if not (isinstance(lr, numbers.Real) and lr > 0) or not (isinstance(steps, numbers.Integral) and steps >= 0):
        raise ValueError(f"self-guidance needs lr > 0 and steps >= 0; got lr={lr!r}, steps={steps!r}")


def self_guided_noise(model: FlowMapNet, eps: torch.Tensor, *, lr: float, steps: int = 1) -> torch.Tensor:
    """Adam steps on the noise eps (B, *shape) that lower its predicted one-step NLL; returns the new noise.

    Runs with gradients on whatever the caller's grad mode; the result is detached (a constant to later steps).
    """
    check_guidance(model, Guidance(lr, steps))
    z = eps.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            nll = -predicted_log_likelihood(model, z).sum()
            (z.grad,) = torch.autograd.grad(nll, z)
            opt.step()
    return z.detach()
