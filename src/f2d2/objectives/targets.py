"""Regression targets shared by the flow-map objectives (all under stop-gradient).

The instantaneous velocity and its divergence come from a *source*: the model's
own u(x, t, t) ("self") or a frozen flow-matching teacher loaded from a checkpoint.
"""

from __future__ import annotations

import torch

from f2d2.io.checkpoint import load_model
from f2d2.core.divergence import divergence
from f2d2.nets import FlowMapNet
from f2d2.nets.external import load_teacher_spec


def load_teacher(source: str | FlowMapNet | None, device: torch.device | str = "cpu") -> FlowMapNet | None:
    """A frozen teacher: a network, or the EMA weights of a checkpoint path; None passes through."""
    if source is None:
        return None
    if isinstance(source, dict):  # an outside velocity model: {factory, state_dict, data_shape, ...}
        return load_teacher_spec(source, device)
    teacher = source.to(device) if isinstance(source, FlowMapNet) else load_model(source, ema=True, device=device)
    teacher.requires_grad_(False)
    return teacher


def check_common_options(*, f2d2: bool, teacher, div_source: str, lam: float) -> None:
    """Validate the options every flow-map objective shares; messages name the config key."""
    if f2d2 and div_source not in ("self", "teacher"):
        raise ValueError(f"objective.div_source = {div_source!r}; expected 'self' or 'teacher'")
    if f2d2 and div_source == "teacher" and teacher is None:
        raise ValueError("objective.div_source = 'teacher' needs objective.teacher (a checkpoint path)")
    if lam < 0:
        raise ValueError(f"objective.lam = {lam!r}; expected a number >= 0")


def velocity_target(source: FlowMapNet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """sg(v(x, t)) of the source, shape of x."""
    with torch.no_grad():
        return source.velocity(x, t)


def divergence_target(
    source: FlowMapNet, x: torch.Tensor, t: torch.Tensor, method: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """sg(v(x, t)) and sg(div v(x, t)) of the source: shapes of x and (B,)."""
    return divergence(lambda y: source.velocity(y, t), x, method, generator=generator)
