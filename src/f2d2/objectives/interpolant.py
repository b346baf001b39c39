"""The linear interpolant I_t = (1 - t) x0 + t x1 (t = 0 noise, t = 1 data) and time sampling."""

from __future__ import annotations

import torch

from f2d2.core.flowmap import expand_time


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """I_t for t (B,); the target velocity of this path is x1 - x0."""
    tt = expand_time(t, x1)
    return (1 - tt) * x0 + tt * x1


def noise_like(x1: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x0 ~ N(0, I) of x1's shape."""
    return torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)


def uniform_time(n: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """t ~ U[0, 1], shape (n,)."""
    return torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
