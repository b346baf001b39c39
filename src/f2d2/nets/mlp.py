"""MLP flow map for low-dimensional data (the paper's 2D setup: 4 layers of 512, GELU)."""

from __future__ import annotations

import math

import torch
from torch import nn

from f2d2.nets.base import FlowMapNet, FlowMapOutput


class FourierTime(nn.Module):
    """Embeds a time batch (B,) as [tau, sin(pi k tau), cos(pi k tau)] for k = 1..n_freq: (B, 1 + 2 n_freq)."""

    def __init__(self, n_freq: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, n_freq + 1, dtype=torch.float32), persistent=False)

    @property
    def out_dim(self) -> int:
        return 1 + 2 * self.freqs.numel()

    def forward(self, tau: torch.Tensor) -> torch.Tensor:
        ang = tau[:, None] * self.freqs
        return torch.cat([tau[:, None], ang.sin(), ang.cos()], dim=1)


class FourierPoints(nn.Module):
    """Random Fourier features of points (B, dim): [sin(x W), cos(x W)], (B, 2 n_freq), W (dim, n_freq) ~ N(0, scale^2).

    W is drawn from a fixed seed (the same for every run of one config) and saved with the weights.
    High frequencies let a small MLP draw sharp density edges (Tancik et al., 2020).
    """

    def __init__(self, dim: int, n_freq: int, scale: float):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"model.x_scale = {scale!r}; expected a number > 0")
        w = torch.randn(dim, n_freq, generator=torch.Generator().manual_seed(0)) * scale
        self.register_buffer("W", w)

    @property
    def out_dim(self) -> int:
        return 2 * self.W.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x @ self.W.to(x.dtype)
        return torch.cat([p.sin(), p.cos()], dim=1)


class MLPFlowMap(FlowMapNet):
    """Trunk on [x, fourier(x), emb(s), emb(t)] with a velocity head (dim outputs) and an optional scalar
    divergence head.

    x: (B, dim); s, t: (B,). ``x_freqs`` random Fourier features of x (0: none) with frequencies of
    std ``x_scale``. The divergence head is zero-initialised, so a head added to a trained velocity
    model starts at D = 0 without changing u.
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 512,
        depth: int = 4,
        time_freqs: int = 8,
        x_freqs: int = 0,
        x_scale: float = 1.0,
        div_head: bool = False,
        div_scale: float = 1.0,
        flow_map: bool = False,
        div_hidden: list[int] = (),
    ):
        super().__init__(div_scale, flow_map)
        if any(h < 1 for h in div_hidden):
            raise ValueError(f"model.div_hidden = {div_hidden!r}; expected hidden sizes >= 1 (or none)")
        self.div_hidden = list(div_hidden)
        if depth < 1 or hidden < 1 or dim < 1:
            raise ValueError(f"MLP needs dim, hidden, depth >= 1; got dim={dim}, hidden={hidden}, depth={depth}")
        self.data_shape = (dim,)
        self.embed = FourierTime(time_freqs)
        self.points = FourierPoints(dim, x_freqs, x_scale) if x_freqs else None
        layers: list[nn.Module] = []
        width = dim + (self.points.out_dim if self.points is not None else 0) + 2 * self.embed.out_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.u_head = nn.Linear(hidden, dim)
        if div_head:
            self.add_div_head()

    def new_div_head(self) -> nn.Module:
        """Linear on the trunk's features, or through ``div_hidden`` GELU layers first."""
        layers: list[nn.Module] = []
        width = self.u_head.in_features
        for h in self.div_hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 1)) if layers else nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> FlowMapOutput:
        feats = [x] if self.points is None else [x, self.points(x)]
        h = self.trunk(torch.cat([*feats, self.embed(s), self.embed(t)], dim=1))
        d = self.d_head(h).squeeze(1) if self.d_head is not None else None
        return FlowMapOutput(self.u_head(h), d)
