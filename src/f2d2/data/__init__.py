"""Datasets: analytic 2D toy distributions, a user's own point set, and images.

``make_dataset(cfg)`` builds one from a config's ``data`` section, e.g.
``{"name": "checkerboard", "scale": 2.0}``, ``{"name": "gmm"}``, ``{"name": "points", "path": "my.npy"}``,
``{"name": "cifar10", "root": "data/cifar10"}`` or ``{"name": "shapes", "size": 8}`` (generated images).
"""

from __future__ import annotations

import math

from f2d2.data.images import CIFAR10, ImageDataset, ImageNet64, Shapes
from f2d2.data.patches import Patches
from f2d2.data.points import PointCloud, load_points
from f2d2.data.toy2d import Checkerboard, DataError, Dataset2D, GaussianMixture
from f2d2.registry import REQUIRED, options_of

__all__ = [
    "CIFAR10",
    "Checkerboard",
    "DataError",
    "Dataset2D",
    "GaussianMixture",
    "IMAGE_NAMES",
    "ImageDataset",
    "ImageNet64",
    "PointCloud",
    "SEED_STRIDE",
    "Shapes",
    "load_points",
    "make_dataset",
]

# Seed streams: a generator seeded with ``seed + i * SEED_STRIDE`` starts stream i. Training rank r draws
# its data and noise from stream r; ``f2d2 sample --metrics`` draws its fresh 2D data points from stream 1.
SEED_STRIDE = 1_000_003


def gmm_preset(
    means: list[list[float]] | None = None, stds: float | list[float] = 0.5, weights: list[float] | None = None
) -> GaussianMixture:
    """The "gmm" dataset: by default 8 equally weighted components of std 0.5 on a circle of radius 4."""
    if means is None:
        means = [[4 * math.cos(2 * math.pi * k / 8), 4 * math.sin(2 * math.pi * k / 8)] for k in range(8)]
    return GaussianMixture(means, stds, weights)


IMAGE_NAMES = ("cifar10", "imagenet64", "shapes", "patches")
DATASETS = {
    "checkerboard": Checkerboard,
    "gmm": gmm_preset,
    "points": PointCloud,
    "cifar10": CIFAR10,
    "imagenet64": ImageNet64,
    "shapes": Shapes,
    "patches": Patches,
}


def make_dataset(cfg: dict) -> Dataset2D | ImageDataset:
    """The dataset named by ``cfg["name"]``; the other keys are its constructor's arguments."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise DataError(f"data config {cfg!r} must be a mapping with a 'name'; allowed names: {sorted(DATASETS)}")
    name = cfg["name"]
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"unknown data name {name!r}; allowed: {sorted(DATASETS)}")
    build = DATASETS[name]
    params = options_of(build)
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise DataError(f"unknown key(s) {unknown} for data name {name!r}; allowed: {sorted(params)}")
    missing = [k for k, default in params.items() if default is REQUIRED and k not in kwargs]
    if missing:
        raise DataError(f"data name {name!r} needs key(s) {missing}")
    return build(**kwargs)
