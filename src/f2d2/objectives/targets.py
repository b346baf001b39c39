"""Regression targets shared by the flow-map objectives (all under stop-gradient).

The instantaneous velocity and its divergence come from a *source*: the model's
own u(x, t, t) ("self") or the frozen flow-matching teacher network the objective was given. The semigroup
targets (Shortcut's self-consistency, also MeanFlow's large steps) come from the model's own two half steps.
"""

from __future__ import annotations

import torch

from f2d2.core.divergence import divergence
from f2d2.core.flowmap import jump
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


@torch.no_grad()
def semigroup_targets(model: FlowMapNet, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor):
    """Two half steps through m = (s + t) / 2: sg targets for u(x, s, t) and D(x, s, t) (None without a head).

    x (B, *shape) at times s; s, t (B,). For an exact flow map both equal the map's own outputs.
    """
    m = (s + t) / 2
    first = model(x, s, m)
    second = model(jump(x, s, m, first.u), m, t)
    d = (first.d + second.d) / 2 if first.d is not None else None
    return (first.u + second.u) / 2, d
