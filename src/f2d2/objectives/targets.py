"""Regression targets shared by the flow-map objectives (all under stop-gradient).

The instantaneous velocity and its divergence come from a *source*: the model's
own u(x, t, t) ("self") or the frozen flow-matching teacher network the objective was given (the semigroup
term's targets, the model's own half steps, are in ``f2d2.objectives.semigroup``).
"""

from __future__ import annotations

import torch

from f2d2.core.divergence import divergence
from f2d2.nets import FlowMapNet


def velocity_target(source: FlowMapNet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """sg(v(x, t)) of the source, shape of x."""
    with torch.no_grad():
        return source.velocity(x, t)


def divergence_target(
    source: FlowMapNet, x: torch.Tensor, t: torch.Tensor, method: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """sg(v(x, t)) and sg(div v(x, t)) of the source: shapes of x and (B,)."""
    return divergence(lambda y: source.velocity(y, t), x, method, generator=generator)
