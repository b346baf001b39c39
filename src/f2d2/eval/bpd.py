"""Bits per dimension of 8-bit images under a continuous flow, with uniform dequantization.

Pixels x in {0, ..., 255}^d are dequantized as y = (x + U) / 256, U ~ U[0, 1)^d, and
mapped to model space z = 2 y - 1 in [-1, 1]. Two changes of variable relate the
densities: p_y(y) = 2^d p_z(z) and, per unit pixel bin, p(x) >= E_U[p_y(y) / 256^d].
So the negative log-likelihood of the pixels in nats is

    NLL(x) = -log p_z(z) - d log 2 + d log 256 = -log p_z(z) + d log 128,

and BPD = NLL / (d log 2) = -log p_z(z) / (d log 2) + 7.

Checked against the F2D2 authors' evaluation (Keely-Ai/F2D2, ``nll.py``, ``compute_nll``:
the same (x * 255 + U) / 256 dequantization, ``+ d log 2`` for z = 2y - 1 and ``- d log 256``
for the bin width, divided by d log 2).
"""

from __future__ import annotations

import math

import torch


def dequantize(pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (or integer-valued) pixels (B, *shape) -> z = 2 (x + U) / 256 - 1, float32, same shape."""
    if pixels.is_floating_point() and not bool((pixels == pixels.round()).all()):
        raise ValueError("dequantize expects integer pixel values 0..255, got non-integer floats")
    u = torch.rand(pixels.shape, generator=generator, device=pixels.device)
    return (pixels.float() + u) * (2 / 256) - 1


def pixel_nll(log_pz: torch.Tensor, dim: int) -> torch.Tensor:
    """NLL of the 8-bit pixels in nats, (B,), from the model-space log-density log p_z(z) (B,) of d = dim values."""
    return -log_pz + dim * math.log(128)


def bits_per_dim(nll_nats: torch.Tensor, dim: int) -> torch.Tensor:
    """Convert a negative log-likelihood in nats per point to bits per dimension."""
    return nll_nats / (dim * math.log(2))
