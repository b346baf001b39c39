"""Image datasets: CIFAR-10, downsampled ImageNet 64x64 and a generated set that needs no download.

Pixels are integers 0..255. ``sample`` returns training images in model space,
x = 2 * pixel / 255 - 1 in [-1, 1], float32 of shape (n, C, H, W) (the data end,
t = 1, of a flow from N(0, I) noise at t = 0). ``test_pixels()`` / ``train_pixels()``
give the uint8 splits (N, C, H, W) for bits per dimension (with dequantization,
see ``f2d2.eval.bpd``) and for FID reference statistics.

Files are checked when the dataset is built (``check_files``, also called by the
pipeline before any job starts); a missing file raises DataError naming the path,
the expected layout and how to obtain it, and so does an ImageNet .npz whose array
is not uint8 of the expected shape or cannot be read. Nothing is downloaded unless
the config says ``download: true``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from f2d2.data.toy2d import DataError


def to_model_space(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) -> float32 in [-1, 1]."""
    return pixels.float() * (2 / 255) - 1


def _npz_header(path: Path, key: str) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) of the array ``key`` of an .npz file, from its header alone; DataError naming the file if
    the archive cannot be read (e.g. cut short) or lacks ``key``."""
    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise DataError(f"could not read the array {key!r} of {path} ({e}); a truncated or damaged file?") from None
    return dtype, shape


class ImageDataset:
    """Interface shared with the 2D datasets: ``dim``, ``has_density``, ``sample(n, generator)``.

    Subclasses load ``_train`` and ``_test``, uint8 tensors (N, C, H, W), in ``_load``.
    """

    has_density = False
    shape: tuple[int, int, int]

    def __init__(self) -> None:
        self._train: torch.Tensor | None = None
        self._test: torch.Tensor | None = None
        self._train_on: torch.Tensor | None = None  # a copy of _train on a device (keep_on_device)

    @property
    def dim(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def model_defaults(self) -> dict:
        """What the network's config takes from the data."""
        return {"in_channels": self.shape[0], "image_size": self.shape[1]}

    def _load(self) -> None:
        raise NotImplementedError

    def train_pixels(self) -> torch.Tensor:
        if self._train is None:
            self._load()
        return self._train

    def test_pixels(self) -> torch.Tensor:
        if self._test is None:
            self._load()
        return self._test

    def keep_on_device(self, device: torch.device | str) -> None:
        """Copy the uint8 training split to ``device`` once; ``sample`` then indexes it there (same images)."""
        self._train_on = self.train_pixels().to(device)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n training images drawn uniformly with replacement, in [-1, 1], on the generator's device."""
        train = self.train_pixels()
        idx = torch.randint(0, len(train), (n,), generator=generator, device=generator.device)
        if self._train_on is not None and self._train_on.device == idx.device:
            return to_model_space(self._train_on[idx])
        return to_model_space(train[idx.cpu()]).to(generator.device)

    def test_subset(self, n: int, seed: int) -> torch.Tensor:
        """The whole test split when n >= its size (in order), else a seeded random subset of n images (uint8)."""
        test = self.test_pixels()
        if n >= len(test):
            return test
        idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]
        return test[idx.sort().values]

    def log_prob(self, x: torch.Tensor) -> None:
        return None


class CIFAR10(ImageDataset):
    """CIFAR-10 (50k train, 10k test, 3 x 32 x 32) from torchvision's python batches under ``root``."""

    shape = (3, 32, 32)
    FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

    def __init__(self, root: str = "data/cifar10", download: bool = False):
        super().__init__()
        self.root, self.download = Path(root), bool(download)
        if not self.download:
            self.check_files()

    def check_files(self) -> None:
        folder = self.root / "cifar-10-batches-py"
        missing = [f for f in self.FILES if not (folder / f).is_file()]
        if missing:
            raise DataError(
                f"CIFAR-10 not found: {folder} lacks {missing}. Expected layout: {folder}/data_batch_1..5 and "
                f"test_batch (the 'CIFAR-10 python version' archive, cifar-10-python.tar.gz from "
                f"https://www.cs.toronto.edu/~kriz/cifar.html, unpacked into {self.root}). Set data.root to its "
                "parent folder, or data.download: true to let torchvision fetch it."
            )

    def _load(self) -> None:
        # here: seconds to import, and only CIFAR-10 needs it
        from torchvision.datasets import CIFAR10 as TV
        from torchvision.datasets.utils import check_integrity

        def split(train: bool) -> torch.Tensor:
            ds = TV(str(self.root), train=train, download=self.download)
            return torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW

        try:
            self._train, self._test = split(True), split(False)
        except RuntimeError:  # torchvision's "Dataset not found or corrupted": name the files failing its MD5 check
            folder = self.root / TV.base_folder
            bad = [str(folder / f) for f, md5 in TV.train_list + TV.test_list if not check_integrity(folder / f, md5)]
            if not bad:
                raise
            raise DataError(
                f"CIFAR-10: {bad} fail the MD5 check of the released files (truncated or altered?); unpack "
                f"cifar-10-python.tar.gz into {self.root} again, or set data.download: true"
            ) from None


class ImageNet64(ImageDataset):
    """Downsampled ImageNet 64x64 (Chrabaszcz et al. 2017): ``train_data_batch_1..10`` and ``val_data``.

    Read from the npz release (``<name>.npz``, array ``data`` of shape (N, 12288), each row
    the R, G, B planes of 64 x 64, row-major). The pickle release (files without suffix) holds
    the same arrays in numpy pickles, which can run code when loaded: it is read only with
    ``allow_pickle: true``.
    """

    shape = (3, 64, 64)
    NAMES = [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]

    def __init__(self, root: str = "data/imagenet64", allow_pickle: bool = False):
        super().__init__()
        self.root, self.allow_pickle = Path(root), bool(allow_pickle)
        self.check_files()

    def _path(self, name: str) -> Path | None:
        npz = self.root / f"{name}.npz"
        if npz.is_file():
            return npz
        raw = self.root / name
        return raw if raw.is_file() and self.allow_pickle else None

    def check_files(self) -> None:
        missing = [n for n in self.NAMES if self._path(n) is None]
        if missing:
            pickles = [n for n in missing if (self.root / n).is_file()]
            hint = (
                (
                    f" The pickle files {pickles} exist: set data.allow_pickle: true to read them (trusted files "
                    "only), or convert them to .npz."
                )
                if pickles
                else ""
            )
            raise DataError(
                f"ImageNet 64x64 not found: {self.root} lacks {[n + '.npz' for n in missing]}. Expected layout: "
                f"{self.root}/train_data_batch_1.npz .. train_data_batch_10.npz and val_data.npz, each with an "
                "array 'data' of shape (N, 12288) uint8 (the 'Imagenet64_train' and 'Imagenet64_val' downsampled "
                "archives from https://image-net.org/download-images, which needs an ImageNet account)." + hint
            )
        for name in self.NAMES:
            path = self._path(name)
            if path.suffix == ".npz":  # a pickle's array is checked when read (_read): loading one can run code
                self._check_data(path, *_npz_header(path, "data"))

    @staticmethod
    def _check_data(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        """DataError naming ``path`` unless its array 'data' is uint8 (N, 12288)."""
        if dtype != np.uint8 or len(shape) != 2 or shape[1] != 3 * 64 * 64:
            raise DataError(f"{path}: 'data' is {dtype} {shape}; expected uint8 (N, {3 * 64 * 64})")

    def _read(self, name: str) -> np.ndarray:
        path = self._path(name)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                data = f["data"]
        else:
            with open(path, "rb") as f:
                data = pickle.load(f)["data"]
        self._check_data(path, data.dtype, data.shape)
        return data.reshape(-1, 3, 64, 64)

    def _load(self) -> None:
        self._train = torch.from_numpy(np.concatenate([self._read(n) for n in self.NAMES[:-1]]))
        self._test = torch.from_numpy(np.ascontiguousarray(self._read("val_data")))


class Shapes(ImageDataset):
    """Generated RGB images that need no download: a colour gradient with one disc or square on it.

    ``n_train`` + ``n_test`` images of ``size`` x ``size`` from numpy's generator seeded with ``seed``;
    the two splits come from the same distribution. Small enough to train a U-Net on a CPU in minutes.
    """

    def __init__(self, size: int = 8, n_train: int = 2000, n_test: int = 500, seed: int = 0):
        super().__init__()
        if not (isinstance(size, int) and size >= 4) or n_train < 1 or n_test < 1:
            raise DataError(
                f"shapes: size = {size!r} (integer >= 4), n_train = {n_train!r}, n_test = {n_test!r} "
                "(>= 1): expected the ranges in brackets"
            )
        self.shape = (3, size, size)
        self.size, self.n_train, self.n_test, self.seed = size, n_train, n_test, seed

    def _load(self) -> None:
        rng = np.random.default_rng(self.seed)
        n, s = self.n_train + self.n_test, self.size
        grid = (np.arange(s) + 0.5) / s
        yy, xx = np.meshgrid(grid, grid, indexing="ij")  # (s, s)
        angle = rng.uniform(0, 2 * np.pi, n)
        ramp = 0.5 + (np.cos(angle)[:, None, None] * (xx - 0.5) + np.sin(angle)[:, None, None] * (yy - 0.5))
        c0, c1, cs = (rng.uniform(0, 1, (n, 3, 1, 1)) for _ in range(3))
        img = c0 + (c1 - c0) * ramp[:, None]  # (n, 3, s, s)
        cy, cx = rng.uniform(0.25, 0.75, (2, n, 1, 1))
        r = rng.uniform(0.15, 0.3, (n, 1, 1))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        square = np.maximum(abs(yy - cy), abs(xx - cx)) <= r
        mask = np.where(rng.uniform(size=(n, 1, 1)) < 0.5, disc, square)[:, None]
        img = np.where(mask, cs, img)
        pixels = torch.from_numpy(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
        self._train, self._test = pixels[: self.n_train], pixels[self.n_train :]
