"""The NLL of a set of points (or 8-bit images) under a likelihood function, in batches.

Images are dequantized and scored as pixels (:mod:`f2d2.eval.bpd`); the likelihood itself is one of
:mod:`f2d2.core.likelihood`'s integrators (data at t = 1 integrated back to noise at t = 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from f2d2.core.likelihood import LikelihoodResult
from f2d2.eval.bpd import dequantize, pixel_nll


def points_nll(
    points: torch.Tensor,
    likelihood: Callable[[torch.Tensor], LikelihoodResult],
    data_shape: tuple[int, ...],
    *,
    batch_size: int,
    device: str | torch.device,
    dequant: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """Negative log-likelihood in nats (N,) float64 of ``points`` (on the CPU) under ``likelihood``,
    evaluated in batches on ``device``, and the number of model evaluations.

    Images (a (C, H, W) ``data_shape``) are 8-bit pixels: dequantized with ``dequant`` and scored as
    pixels (:mod:`f2d2.eval.bpd`); other points are scored as they are. ``bits_per_dim`` turns it into BPD.
    """
    images = len(data_shape) == 3
    logps, nfe = [], 0
    for chunk in points.split(batch_size):
        res = likelihood((dequantize(chunk, dequant) if images else chunk).to(device))
        logps.append(res.log_prob.cpu())
        nfe += res.nfe
    log_p = torch.cat(logps).double()
    return (pixel_nll(log_p, math.prod(data_shape)) if images else -log_p), nfe
