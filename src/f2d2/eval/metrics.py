"""Metrics on 2D samples and per-point likelihoods (FID for images lives with the image code)."""

from __future__ import annotations

import numpy as np
import torch


def nll_error(nll: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> float:
    """Mean per-point |NLL - reference NLL| in float64 (the paper's Table 7 measure); both (B,).

    The one definition for ``f2d2 nll --compare`` (tensors), the benchmark (tensors) and Table 7's
    check of the cells' per-point CSVs (numpy arrays). Tensors are averaged by torch and arrays by
    numpy: the two sum in different orders, so a value can differ in its last digit between them, and
    each caller keeps the library its numbers always came from.
    """
    if nll.shape != reference.shape:
        raise ValueError(f"NLL shapes differ: {tuple(nll.shape)} vs reference {tuple(reference.shape)}")
    if isinstance(nll, np.ndarray) and isinstance(reference, np.ndarray):
        return float(np.mean(np.abs(nll.astype(np.float64, copy=False) - reference.astype(np.float64, copy=False))))
    return float((torch.as_tensor(nll).double() - torch.as_tensor(reference).double()).abs().mean())


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, *, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between point sets x (N, d) and y (N, d) of equal size."""
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], projections, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px = (x.double().cpu() @ dirs).sort(0).values
    py = (y.double().cpu() @ dirs).sort(0).values
    return float((px - py).pow(2).mean().sqrt())


def support_mass(log_prob: torch.Tensor) -> float:
    """Share of samples where an analytic density is positive (finite log-density ``log_prob``, (N,)),
    e.g. in checkerboard cells."""
    return float(torch.isfinite(log_prob).double().mean())
