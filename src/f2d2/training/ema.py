"""The EMA of the weights, the model every evaluation uses: its decay per step and what it keeps of the start.

Update s (after optimizer step s) of torch's ``AveragedModel`` copies the weights at s = 1 and sets
``ema <- decay_s * ema + (1 - decay_s) * weights`` for s >= 2, where ``decay_s`` is ``train.ema_decay``
or, with ``train.ema_halflife_steps`` = H, ``0.5 ** (1 / h_s)`` with the half-life h_s = H, or
min(H, ``train.ema_rampup`` * s) (EDM's ramp-up, also the authors': early steps average fast). The decay
is read from the EMA's ``n_averaged`` buffer (s - 1), which the checkpoint holds, so a resumed run takes
the same decays. Each stage starts a new EMA at s = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn


def decay_at(step: int, tr: dict) -> float:
    """The EMA decay of update ``step`` (1-based; update 1 copies the weights) under the train section ``tr``."""
    halflife = tr["ema_halflife_steps"]
    if halflife is None:
        return tr["ema_decay"]
    if tr["ema_rampup"] is not None:
        halflife = min(halflife, tr["ema_rampup"] * step)
    return 0.5 ** (1 / halflife)


def multi_avg_fn(tr: dict) -> Callable:
    """``AveragedModel``'s ``multi_avg_fn`` for the train section ``tr``: torch's own for a constant decay."""
    if tr["ema_halflife_steps"] is None:
        return get_ema_multi_avg_fn(tr["ema_decay"])

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        decay = decay_at(int(n_averaged) + 1, tr)
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        else:
            for p_ema, p in zip(ema_params, params, strict=True):
                p_ema.copy_(p_ema * decay + p * (1 - decay))

    return update


def start_share(tr: dict, steps: int) -> float:
    """The weight of update 1 (the weights one step after the start) in the EMA after update ``steps``:
    the product of the decays of updates 2..steps."""
    halflife, ramp = tr["ema_halflife_steps"], tr["ema_rampup"]
    if halflife is None:
        return tr["ema_decay"] ** (steps - 1)
    ramped = min(steps, math.ceil(halflife / ramp)) if ramp is not None else 1  # updates with r * s < H
    halvings = 0.0
    for s in range(2, ramped + 1):
        halvings += 1 / min(halflife, ramp * s)
        if halvings > 1100:  # 0.5 ** 1100 is below the smallest float
            return 0.0
    return 0.5 ** (halvings + (steps - ramped) / halflife)
