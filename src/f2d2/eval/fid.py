"""FID through clean-fid: samples and reference images as PNG folders, features, Frechet distance.

Images enter as uint8 arrays (N, 3, H, W). Two feature extractors:

- ``"inception"``: clean-fid's TorchScript InceptionV3 ("clean" mode: its own resize to 299 x 299)
  read from ``<weights_dir>/inception-2015-12-05.pt``. clean-fid's own default is
  ``/tmp/inception-2015-12-05.pt``, which it downloads when missing; here the file is only read,
  and a missing one raises FIDError naming the path and where to get it.
- ``"tiny-conv"``: a small fixed (seeded) random conv net on the images at their own size, through
  clean-fid's ``custom_feat_extractor`` path; needs no download. Its distances are only comparable
  with each other (tests, the CPU-sized pipeline), not with published FIDs.

Reference statistics (``mu``, ``sigma`` of the training images' features) are written once to an
``.npz`` by ``reference_stats``; clean-fid's precomputed file
``<cleanfid>/stats/<name>_clean_train_<res>.npz`` is used instead when it is already on disk.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from f2d2.config.schema import section
from f2d2.io.atomic import atomic_path

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
_OPTIONS = section("eval.fid")["properties"]  # the config's eval.fid: extractor names, default weights folder
EXTRACTORS = tuple(_OPTIONS["extractor"]["enum"])
WEIGHTS_DIR = _OPTIONS["weights_dir"]["default"]


class FIDError(RuntimeError):
    """FID cannot be computed (missing weights, bad image arrays); the message names the file or value."""


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


def inception_path(weights_dir: str | Path) -> Path:
    return Path(weights_dir) / INCEPTION_FILE


def build_extractor(name: str, weights_dir: str | Path = WEIGHTS_DIR, device: str = "cpu"):
    """(feature model, clean-fid resize hook or None); raises FIDError before any work when weights are missing."""
    if name == "tiny-conv":
        return TinyConvFeatures().to(device).eval(), keep_size
    if name != "inception":
        raise FIDError(f"FID extractor {name!r} is unknown; expected one of {EXTRACTORS}")
    path = inception_path(weights_dir)
    if not path.is_file():
        raise FIDError(
            f"Inception weights for FID not found at {path}. clean-fid expects the TorchScript file "
            f"{INCEPTION_FILE} (download it once from {INCEPTION_URL} and place it there, or point "
            "eval.fid.weights_dir at its folder); nothing is downloaded at run time."
        )
    from cleanfid.inception_torchscript import InceptionV3W  # clean-fid on first use: only image runs need it

    return InceptionV3W(str(path.parent), download=False, resize_inside=False).to(device).eval(), None


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
    """Features (N, F) of uint8 images (N, C, H, W) via clean-fid's folder pipeline."""
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
    """Write mu, sigma of the reference images to ``out``; returns where they came from.

    With the Inception extractor and a dataset ``name`` whose clean-fid file is on disk, that file
    is copied instead of recomputing.
    """
    pre = precomputed_stats(name, pixels.shape[-1]) if name else None
    if extractor == "inception" and pre is not None and pre.is_file():
        with np.load(pre) as f:
            mu, sigma = f["mu"], f["sigma"]
        source = str(pre)
    else:
        feats = features(pixels, extractor, weights_dir=weights_dir, device=device)
        mu, sigma = feats.mean(0), np.cov(feats, rowvar=False)
        source = f"computed from {len(pixels)} images"
    with atomic_path(out) as tmp:
        np.savez(tmp, mu=mu, sigma=sigma)
    return source


def fid_to_reference(
    pixels: np.ndarray, stats: str | Path, extractor: str, *, weights_dir: str | Path = WEIGHTS_DIR, device: str = "cpu"
) -> float:
    """FID between uint8 images (N, C, H, W) and the reference statistics file written by ``reference_stats``."""
    from cleanfid.fid import frechet_distance  # on first use (see build_extractor)

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
    return float(frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), mu_ref, sigma_ref))
