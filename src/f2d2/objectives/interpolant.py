"""The linear interpolant I_t = (1 - t) x0 + t x1 (t = 0 noise, t = 1 data) and time sampling."""

from __future__ import annotations

import torch

from f2d2.config.options import Option
from f2d2.core.flowmap import expand_time

TIME_GRIDS = ("continuous", "dyadic")  # where a step of size d starts: anywhere, or at a multiple of d
# How a flow-map objective draws its steps (s, t): both directions, and a share moved to start at the data.
STEP_OPTIONS = (
    Option("two_way", True, {"type": "boolean"}, "also draw steps backward (t < s), as the likelihood takes them"),
    Option(
        "from_data",
        0.0,
        {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "share of the map steps moved to start at the data (s = 1, backward)",
    ),
)


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


def dyadic_steps(
    n: int, log2: int, generator: torch.Generator, like: torch.Tensor, *, grid: str, two_way: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t), each (n,): steps of size |t - s| = 2^-k, k ~ U{0..log2}, inside [0, 1].

    ``grid``: ``continuous`` (s ~ U[0, 1 - d]) or ``dyadic`` (s a multiple of d, where a K = 2^j-step
    evaluation starts its steps; the objective checks the name once, at construction); s < t unless
    ``two_way`` reverses half of them.
    """
    k = torch.randint(0, log2 + 1, (n,), generator=generator, device=like.device)
    d = torch.pow(2.0, -k.to(like.dtype))
    u = uniform_time(n, generator, like)
    s = torch.floor(u / d).clamp(max=1 / d - 1) * d if grid == "dyadic" else u * (1 - d)
    t = s + d
    if two_way:
        back = torch.rand(n, generator=generator, device=like.device) < 0.5
        s, t = torch.where(back, t, s), torch.where(back, s, t)
    return s, t


def check_from_data(share: float, two_way: bool) -> None:
    """objective.from_data > 0 moves backward steps: it needs two_way."""
    if share and not two_way:
        raise ValueError(f"objective.from_data = {share!r} moves steps backward from the data; it needs two_way: true")


def from_data(
    s: torch.Tensor, t: torch.Tensor, share: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t), each (n,), with a ``share`` of the pairs with s != t moved to (1, 1 - |t - s|): the same step,
    taken backward from the data, where every K-step likelihood starts. Next to the data the flow is stiff
    (the teacher's velocity at t = 1 is x1 itself; the noise it adds below comes from the tiny off-manifold
    part of x1), and uniformly placed steps reach it 1 / K of the time. A share of 0 returns (s, t) as they are
    and draws nothing from ``generator``."""
    if not share:
        return s, t
    pick = (torch.rand(s.shape[0], generator=generator, device=s.device) < share) & (s != t)
    return torch.where(pick, torch.ones_like(s), s), torch.where(pick, 1 - (t - s).abs(), t)
