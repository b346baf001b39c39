"""K-step sampling: flow-map steps forward from noise (t = 0) to data (t = 1)."""

from __future__ import annotations

import torch

from .flowmap import flow_map_step
from .likelihood import time_grid
from .nets import FlowMapNet


@torch.no_grad()
def sample(model: FlowMapNet, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """Push noise x0 (B, *shape) through ``steps`` uniform steps; returns x1 of the same shape."""
    grid = time_grid(steps, start=0.0, end=1.0)
    x = x0
    for s, t in zip(grid[:-1], grid[1:]):
        x, _ = flow_map_step(model, x, s, t)
    return x
