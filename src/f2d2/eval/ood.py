"""Out-of-distribution detection from likelihoods: AUROC and the complexity-corrected score.

Higher score = more out-of-distribution throughout (bits per dimension, BPD, as it is). Raw likelihood is known to
favour simple inputs (a flat patch gets a low BPD whatever its source), so Serra et al. (2020, "Input complexity
and out-of-distribution detection with likelihood-based generative models") subtract a lossless compressor's
code length: S(x) = BPD(x) - L(x), with L(x) the compressed size of the 8-bit image in bits divided by its number
of dimensions (a likelihood ratio against a generic image model).
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import torch

COMPRESSORS = ("png", "zlib")


def _scores(name: str, values) -> np.ndarray:
    """``values`` as a float64 vector, or ValueError naming ``name``."""
    try:
        a = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a 1-D array of numbers, got {type(values).__name__}") from None
    if a.ndim != 1 or len(a) == 0:
        raise ValueError(f"{name} has shape {a.shape}; expected a non-empty 1-D array of scores")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has {int((~np.isfinite(a)).sum())} non-finite score(s); expected finite scores")
    return a


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve of telling ``out_scores`` (M,) from ``in_scores`` (N,), higher = out.

    Rank-based (Mann-Whitney U / (N M)), ties counted half: the probability that a random out-of-distribution
    point scores above a random in-distribution one, plus half the probability of a tie. 1 separates perfectly,
    0.5 is chance, 0 is perfectly reversed.
    """
    a, b = _scores("in_scores", in_scores), _scores("out_scores", out_scores)
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="stable")
    _, first, counts = np.unique(both[order], return_index=True, return_counts=True)
    ranks = np.empty(len(both))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based, the mean rank of each tied group
    u = ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2
    return float(u / (len(a) * len(b)))


def _compressed_bytes(patch: np.ndarray, compressor: str) -> int:
    """Size in bytes of one uint8 (H, W, C) image under ``compressor``."""
    if compressor == "zlib":
        return len(zlib.compress(patch.tobytes(), 9))
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(patch).save(buf, format="PNG", compress_level=9)
    return buf.tell()


def compressed_bits_per_dim(pixels: torch.Tensor, compressor: str = "png") -> torch.Tensor:
    """L(x) in bits per dimension, float64 (B,), of 8-bit images ``pixels`` (B, 3, H, W) (uint8, 0..255).

    compressor: "png" (Pillow's PNG encoder, compress_level 9, the whole file: signature, headers and the
    filtered, deflated rows) or "zlib" (deflate level 9 of the raw bytes, rows of interleaved RGB). A fixed header
    shifts every image alike, so it leaves AUROC unchanged.
    """
    if compressor not in COMPRESSORS:
        raise ValueError(f"compressor = {compressor!r}; expected one of {list(COMPRESSORS)}")
    if (
        not (
            isinstance(pixels, torch.Tensor)
            and pixels.dtype == torch.uint8
            and pixels.dim() == 4
            and pixels.shape[1] == 3
        )
        or len(pixels) == 0
    ):
        what = f"{pixels.dtype} {tuple(pixels.shape)}" if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"pixels is {what}; expected a uint8 tensor (B >= 1, 3, H, W) of 8-bit RGB images")
    hwc = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    dim = hwc[0].size
    return torch.tensor([8 * _compressed_bytes(p, compressor) / dim for p in hwc], dtype=torch.float64)


def complexity_corrected(bpd, pixels: torch.Tensor, compressor: str = "png") -> torch.Tensor:
    """S(x) = BPD(x) - L(x), float64 (B,), of bits per dimension ``bpd`` (B,) of the 8-bit images ``pixels``."""
    bpd = torch.as_tensor(_scores("bpd", bpd))
    complexity = compressed_bits_per_dim(pixels, compressor)
    if len(bpd) != len(complexity):
        raise ValueError(f"bpd has {len(bpd)} scores and pixels {len(complexity)} images; expected one per image")
    return bpd - complexity


def complexity_tilt(error, complexity) -> dict[str, float]:
    """How a model's per-image error follows the image's complexity: ``error`` (N,), e.g. BPD - a reference's BPD,
    and ``complexity`` (N,), e.g. :func:`compressed_bits_per_dim`; N >= 8.

    Returns ``corr`` (Pearson's correlation of the two; 0 where either is constant), ``simplest`` and
    ``most_complex`` (the mean error on the quarter of the images with the lowest / highest complexity). A likelihood
    whose error is a tilt moves OOD rankings (the OOD set is often the simpler one) even when its mean error is 0."""
    e, c = _scores("error", error), _scores("complexity", complexity)
    if len(e) != len(c) or len(e) < 8:
        raise ValueError(f"error has {len(e)} and complexity {len(c)} values; expected the same number, >= 8")
    order = np.argsort(c, kind="stable")
    q = len(e) // 4
    corr = float(np.corrcoef(e, c)[0, 1]) if e.std() > 0 and c.std() > 0 else 0.0
    return {"corr": corr, "simplest": float(e[order[:q]].mean()), "most_complex": float(e[order[-q:]].mean())}
