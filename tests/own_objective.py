"""A user's objective in one file: flow matching with times drawn as t = u^power (more of them near the
data when power < 1) and a weight on the loss. What it declares is all the project needs to check, train,
fingerprint and tabulate it; ``f2d2.objectives.register`` names it for configs."""

from __future__ import annotations

import torch

from f2d2.config.options import Option
from f2d2.objectives import Objective
from f2d2.objectives.interpolant import interpolate, noise_like, uniform_time


class PoweredFlowMatching(Objective):
    """L = weight * || v(I_t, t) - (x1 - x0) ||^2, t = u^power with u ~ U[0, 1]."""

    OPTIONS = (
        Option("power", 1.0, {"type": "number", "exclusiveMinimum": 0}, "times t = u^power, u ~ U[0, 1]"),
        Option("weight", 1.0, {"type": "number", "exclusiveMinimum": 0}, "the loss's weight"),
    )
    TERMS = ("fm",)
    flow_map = False

    def __call__(self, model, x1: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x0 = noise_like(x1, generator)
        t = uniform_time(x1.shape[0], generator, x1).pow(self.power)
        fm = (model.velocity(interpolate(x0, x1, t), t) - (x1 - x0)).pow(2).mean()
        return {"loss": self.weight * fm, "fm": fm.detach()}
