"""Point and image arrays on disk: .npy or .csv of shape (N, dim), uint8 images (N, C, H, W) as .npy,
and the per-point NLL files that ``f2d2 nll`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from f2d2.data import DataError
from f2d2.io.atomic import atomic_path, atomic_write_text
from f2d2.io.table import read_nll_table


def write_array(path: Path, array: np.ndarray, header: list[str] | None = None) -> None:
    """Write (N, k) or (N,) to .npy or .csv atomically."""
    if path.suffix == ".npy":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array)
    elif path.suffix == ".csv":
        arr = array.reshape(len(array), -1)
        names = header or [f"x{i}" for i in range(arr.shape[1])]
        lines = [",".join(names)] + [",".join(f"{v:.9g}" for v in row) for row in arr]
        atomic_write_text(path, "\n".join(lines) + "\n")
    else:
        raise ValueError(f"output file {path} must end in .npy or .csv")


def check_out_suffix(path: Path) -> None:
    """Fail before any work when an output file is neither .npy nor .csv."""
    if path.suffix not in (".npy", ".csv"):
        raise ValueError(f"output file {path} must end in .npy or .csv, got {path.suffix!r}")


def _load_npy(path: Path, expected: str) -> np.ndarray:
    """The array of a .npy file; DataError naming the file and ``expected`` if it cannot be read as one."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"could not read {path} as a .npy array ({e}); expected {expected}") from None


def read_nll(path: Path) -> torch.Tensor:
    """The nll_nats column of a file written by ``f2d2 nll`` (a CSV as ``read_nll_table`` reads it, or a .npy)."""
    if path.suffix == ".npy":
        arr = _load_npy(path, "a .npy of per-point NLLs written by f2d2 nll")
        return torch.from_numpy(np.asarray(arr).reshape(len(arr), -1)[:, 0]).double()
    header, rows = read_nll_table(path)
    return torch.from_numpy(rows[:, header.index("nll_nats")])


def load_images(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """uint8 images (N, *shape) from a .npy file (as written by f2d2 data); errors name the file."""
    expected = f"a .npy of uint8 images (N, {', '.join(map(str, shape))})"
    if not Path(path).is_file():
        raise DataError(f"{path} not found; expected {expected}")
    arr = _load_npy(path, expected)
    if arr.dtype != np.uint8 or arr.shape[1:] != tuple(shape) or len(arr) == 0:
        raise DataError(
            f"{path} holds {arr.dtype} {arr.shape}; expected uint8 images (N >= 1, "
            f"{', '.join(map(str, shape))}) as written by f2d2 data"
        )
    return torch.from_numpy(arr)
