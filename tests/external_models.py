"""A velocity network written outside f2d2 (plain torch), importable as a teacher factory in tests."""

from __future__ import annotations

import torch
from torch import nn


class TimeMLP(nn.Module):
    """v(x, t) for x (B, dim) and t (B,) or a scalar (as flow_matching's ODESolver passes it)."""

    def __init__(self, dim: int = 2, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(x.shape[0], 1)
        return self.net(torch.cat([x, t], dim=1))


def time_mlp(dim: int = 2, hidden: int = 64) -> TimeMLP:
    """The factory a teacher spec names: ``external_models:time_mlp``."""
    return TimeMLP(dim, hidden)
