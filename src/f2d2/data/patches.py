"""Natural-image patches from photographs bundled in installed wheels (scikit-image's, one of matplotlib's, two of
scikit-learn's): real pixels, no download.

Each photo (uint8 RGB, optionally shrunk by an integer ``downsample`` factor, block means)
is cut into a bottom band of ``test_fraction`` of its rows, the test region, and the rows
above it, the training region. Patches of ``size`` x ``size`` lie on a grid wholly inside
one region, so no test patch shares a pixel with a training patch.
``patch_boxes(split)`` gives each patch's source as (photo, row, col) of its top-left
pixel in the (downsampled) photo.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from f2d2.data.images import ImageDataset
from f2d2.data.toy2d import DataError

# name -> (wheel, photo, (height, width) of the photo it gives): a function of skimage.data (files shipped in
# the wheel, loaded from skimage/data/, never fetched), a file of matplotlib's mpl-data/sample_data or of
# scikit-learn's sklearn/datasets/images (read from the installed package's folder; sklearn is not imported). RGB photos
# only: a grey photo copied into three channels would make two of them redundant and the bits per dimension
# meaningless. "motorcycle" is the left view of stereo_motorcycle (the right view shows the same scene).
PHOTOS = {
    "astronaut": ("scikit-image", "astronaut", (512, 512)),
    "chelsea": ("scikit-image", "chelsea", (300, 451)),
    "coffee": ("scikit-image", "coffee", (400, 600)),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg", (600, 512)),
    "hubble_deep_field": ("scikit-image", "hubble_deep_field", (872, 1000)),
    "immunohistochemistry": ("scikit-image", "immunohistochemistry", (512, 512)),
    "motorcycle": ("scikit-image", "stereo_motorcycle", (500, 741)),
    "retina": ("scikit-image", "retina", (1411, 1411)),
    "rocket": ("scikit-image", "rocket", (427, 640)),
    "china": ("scikit-learn", "china.jpg", (427, 640)),
    "flower": ("scikit-learn", "flower.jpg", (427, 640)),
}
# The default leaves out hubble_deep_field (a dark star field) and retina (a fifth of its patches are the flat
# black surround): together they would be two thirds of all patches. They and grace_hopper (a portrait) are the
# out-of-distribution photos of bench/ood.py (docs/ood.md).
DEFAULT_PHOTOS = ("astronaut", "chelsea", "coffee", "immunohistochemistry", "motorcycle", "rocket")
OOD_PHOTOS = ("hubble_deep_field", "retina", "grace_hopper")
# Kept for an independent OOD check (bench/ood.py --ood-photos): no setting was chosen on them (docs/ood.md).
CHECK_PHOTOS = ("china", "flower")

Box = tuple[str, int, int]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _grid(top: int, bottom: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the size x size patches on a stride grid wholly inside rows [top, bottom)."""
    return [(r, c) for r in range(top, bottom - size + 1, stride) for c in range(0, width - size + 1, stride)]


def _downsample(img: np.ndarray, f: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H // f, W // f, 3): rounded means of f x f blocks (trailing rows/columns dropped)."""
    if f == 1:
        return img
    h, w = img.shape[0] // f, img.shape[1] // f
    blocks = img[: h * f, : w * f].reshape(h, f, w, f, 3).astype(np.int64).sum((1, 3))
    return ((blocks + f * f // 2) // (f * f)).astype(np.uint8)


def _read_rgb(file) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as f:
        return np.asarray(f.convert("RGB"))


def read_photo(name: str) -> np.ndarray:
    """The photo ``name`` of ``PHOTOS``, uint8 (height, width, 3), read from its package's files."""
    package, item, size = PHOTOS[name]
    try:
        if package == "scikit-image":
            import skimage.data

            img = getattr(skimage.data, item)()
            img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)
            where = f"skimage.data.{item}()"
        elif package == "matplotlib":
            import matplotlib.cbook

            img = _read_rgb(matplotlib.cbook.get_sample_data(item, asfileobj=False))
            where = f"matplotlib's sample_data/{item}"
        else:
            spec = importlib.util.find_spec("sklearn")
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError("sklearn")
            img = _read_rgb(Path(spec.submodule_search_locations[0]) / "datasets" / "images" / item)
            where = f"scikit-learn's sklearn/datasets/images/{item}"
    except ModuleNotFoundError as e:
        raise DataError(f"patches: photo {name!r} needs {package} (pip install {package}), which ships it") from e
    expected = size + (3,)
    if img.shape != expected or img.dtype != np.uint8:
        raise DataError(
            f"patches: {where} is {img.dtype} {img.shape}; expected uint8 {expected} (this {package} release ships "
            "a different photo)"
        )
    return img


class Patches(ImageDataset):
    """Patches (uint8, 3 x size x size) of bundled RGB photos (``PHOTOS``); train/test split by photo region.

    ``images``: photo names (default ``DEFAULT_PHOTOS``; allowed: ``PHOTOS``). ``stride``: the step of the
    training grid (default ``size``, non-overlapping; smaller makes training patches overlap each other, never a
    test patch); the test grid's step is always ``size``, so test patches share no pixels either.
    ``downsample``: shrink each photo by this integer factor first, so that a small patch holds more of the scene
    than texture. ``n_train`` / ``n_test``: keep at most this many patches of a split, a subset drawn with
    ``seed`` (kept in grid order); None keeps all. The same options always give the same patches.
    """

    def __init__(
        self,
        size: int = 8,
        stride: int | None = None,
        images: list[str] | None = None,
        test_fraction: float = 0.2,
        downsample: int = 1,
        n_train: int | None = None,
        n_test: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        names = list(DEFAULT_PHOTOS if images is None else images if isinstance(images, (list, tuple)) else [])
        distinct = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
        problems = [
            f"{key} = {value!r}; expected {allowed}"
            for key, value, ok, allowed in (
                ("size", size, _is_int(size) and size >= 2, "an integer >= 2"),
                ("stride", stride, stride is None or (_is_int(stride) and stride >= 1), "null or an integer >= 1"),
                ("downsample", downsample, _is_int(downsample) and downsample >= 1, "an integer >= 1"),
                (
                    "test_fraction",
                    test_fraction,
                    isinstance(test_fraction, (int, float))
                    and not isinstance(test_fraction, bool)
                    and 0 < test_fraction < 1,
                    "a number in (0, 1)",
                ),
                ("n_train", n_train, n_train is None or (_is_int(n_train) and n_train >= 1), "null or an integer >= 1"),
                ("n_test", n_test, n_test is None or (_is_int(n_test) and n_test >= 1), "null or an integer >= 1"),
                ("seed", seed, _is_int(seed) and seed >= 0, "an integer >= 0"),
                (
                    "images",
                    images,
                    len(names) > 0 and distinct,
                    f"a non-empty list of distinct photo names from {sorted(PHOTOS)}",
                ),
            )
            if not ok
        ]
        unknown = [n for n in names if isinstance(n, str) and n not in PHOTOS]
        if unknown:
            problems.append(f"images: unknown photo(s) {unknown}; allowed: {sorted(PHOTOS)}")
        if problems:
            raise DataError("patches: " + "; ".join(problems))
        self.shape = (3, size, size)
        self.size, self.stride, self.images = size, size if stride is None else stride, names
        self.test_fraction, self.downsample, self.seed = float(test_fraction), downsample, seed
        self.n_train, self.n_test = n_train, n_test
        self._boxes = self._split()

    def _split(self) -> dict[str, list[Box]]:
        """The boxes of each split (capped), from the photos' sizes in ``PHOTOS``; checked against the pixels in
        ``_load``."""
        s, f = self.size, self.downsample
        boxes: dict[str, list[Box]] = {"train": [], "test": []}
        for name in self.images:
            h, w = PHOTOS[name][2][0] // f, PHOTOS[name][2][1] // f
            n_test_rows = round(self.test_fraction * h)
            where = f"photo {name!r} ({h} x {w} after downsample {f})"
            if s > w or s > h:
                raise DataError(f"patches: size = {s} is larger than {where}; expected size <= {min(h, w)}")
            for split, top, bottom in (("train", 0, h - n_test_rows), ("test", h - n_test_rows, h)):
                if bottom - top < s:
                    raise DataError(
                        f"patches: the {split} region of {where} has {bottom - top} rows (test_fraction = "
                        f"{self.test_fraction}: the bottom {n_test_rows} rows are test), fewer than size = {s}, so "
                        f"it yields zero {split} patches; expected a test_fraction, size or downsample that leaves "
                        f">= {s} rows in each region"
                    )
                step = self.stride if split == "train" else s
                boxes[split] += [(name, r, c) for r, c in _grid(top, bottom, w, s, step)]
        for k, (split, cap) in enumerate((("train", self.n_train), ("test", self.n_test))):
            if cap is not None and cap < len(boxes[split]):
                keep = np.sort(np.random.default_rng([self.seed, k]).choice(len(boxes[split]), cap, replace=False))
                boxes[split] = [boxes[split][i] for i in keep]
        return boxes

    def patch_boxes(self, split: str) -> list[Box]:
        """(photo, row, col) of each patch of ``split`` ("train" or "test"), in the order of its pixels; the patch
        covers rows row .. row + size - 1 and columns col .. col + size - 1 of the downsampled photo."""
        if split not in self._boxes:
            raise DataError(f"patches: split = {split!r}; expected 'train' or 'test'")
        return list(self._boxes[split])

    def _load(self) -> None:
        photos = {name: _downsample(read_photo(name), self.downsample) for name in self.images}
        s = self.size

        def cut(split: str) -> torch.Tensor:
            stack = np.stack([photos[n][r : r + s, c : c + s] for n, r, c in self._boxes[split]])  # (N, s, s, 3)
            return torch.from_numpy(np.ascontiguousarray(stack.transpose(0, 3, 1, 2)))

        self._train, self._test = cut("train"), cut("test")
