"""The interface shared by every flow-map backbone (MLP for 2D, U-Net for images)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class FlowMapOutput(NamedTuple):
    """``u``: (B, *data_shape) average velocity; ``d``: (B,) scaled average divergence or None."""

    u: torch.Tensor
    d: torch.Tensor | None


class FlowMapNet(nn.Module):
    """Base class: subclasses implement ``forward(x, s, t) -> FlowMapOutput``.

    ``div_scale`` (c) is the factor the divergence head was trained with: the head
    predicts div / c, and ``c * d`` is the divergence in nats per unit time.
    ``flow_map`` says whether u(x, s, t) was trained for s != t; a velocity-only
    model (the flow-matching teacher) is sampled and integrated with Euler steps.
    """

    data_shape: tuple[int, ...]
    has_div_head: bool

    def __init__(self, div_scale: float = 1.0, flow_map: bool = False):
        super().__init__()
        self.d_head: nn.Module | None = None
        self.has_div_head = False
        self.flow_map = bool(flow_map)
        if not div_scale > 0:
            raise ValueError(f"model.div_scale = {div_scale!r}; expected a number > 0")
        self.div_scale = float(div_scale)

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Instantaneous velocity v(x, t) = u(x, t, t); x: (B, *data_shape), t: (B,)."""
        return self(x, t, t).u

    def add_div_head(self) -> None:
        """Attach a freshly initialised divergence head (warm start of F2D2 from a velocity-only model).

        Its last linear layer starts at zero, so D = 0 and the velocity is unchanged."""
        if self.d_head is not None:
            return
        head = self.new_div_head()
        last = head[-1] if isinstance(head, nn.Sequential) else head
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.d_head = head.to(next(self.parameters()).device)
        self.has_div_head = True

    def new_div_head(self) -> nn.Module:
        """The backbone's divergence head, mapping its final features to (B, 1)."""
        raise NotImplementedError
