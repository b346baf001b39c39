"""Flow matching: L_FM = || v(I_t, t) - (x1 - x0) ||^2 with t ~ U[0, 1] (the teacher of every later stage)."""

from __future__ import annotations

import torch

from f2d2.nets import FlowMapNet
from f2d2.objectives.base import Objective
from f2d2.objectives.interpolant import interpolate, noise_like, uniform_time


class FlowMatching(Objective):
    """Regresses the instantaneous velocity u(x, t, t) onto the interpolant's velocity."""

    TERMS = ("fm",)
    flow_map = False

    def __call__(self, model: FlowMapNet, x1: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x0 = noise_like(x1, generator)
        t = uniform_time(x1.shape[0], generator, x1)
        loss = (model.velocity(interpolate(x0, x1, t), t) - (x1 - x0)).pow(2).mean()
        return {"loss": loss, "fm": loss.detach()}
