"""A user's own point set read from a .npy or .csv file: data (t = 1) with no analytic density."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from f2d2.data.toy2d import DataError, Dataset2D


def _expected(dim: int) -> str:
    return f"expected a .npy or .csv file with shape (N, {dim})"


def _read_csv(path: Path, dim: int) -> np.ndarray:
    """Comma-separated numbers, optionally below one header line whose fields are all non-numeric."""
    bad = (
        f"could not parse {path} as CSV ({{}}); {_expected(dim)}: comma-separated numbers, "
        "optionally below one header line of column names"
    )
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(bad.format(e)) from None
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return np.empty((0, dim))

    def is_number(field: str) -> bool:
        try:
            float(field)
        except ValueError:
            return False
        return True

    header = not any(is_number(f) for f in lines[first].split(","))
    skip = first + 1 if header else 0
    if not any(line.strip() for line in lines[skip:]):
        return np.empty((0, dim))
    try:
        return np.loadtxt(lines, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise DataError(bad.format(e)) from None


def load_points(path: str | Path, dim: int = 2) -> torch.Tensor:
    """Points from a .npy or .csv file as a float32 tensor of shape (N, dim).

    Raises DataError, naming the file and the expected shape, for a missing file, another
    extension, an unreadable file, a shape other than (N, dim) with N >= 1, or values that
    are NaN, inf or beyond the float32 range.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; {_expected(dim)}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"could not read {path} as a .npy array ({e}); {_expected(dim)}") from None
    elif suffix == ".csv":
        arr = _read_csv(path, dim)
    else:
        raise DataError(f"{path} has unsupported extension {path.suffix!r}; {_expected(dim)}")
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{path} holds values of dtype {arr.dtype}, not real numbers; {_expected(dim)}")
    if arr.ndim == 2 and arr.shape[0] == 0:
        raise DataError(f"{path} holds 0 rows; {_expected(dim)} and N >= 1")
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise DataError(f"{path} holds an array of shape {arr.shape}; {_expected(dim)}")
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad_rows):
        raise DataError(
            f"{path} has {len(bad_rows)} of {len(arr)} rows with NaN, inf or beyond-float32 values "
            f"(first bad row: {bad_rows[0]}, counting data rows from 0); {_expected(dim)} and finite values"
        )
    return torch.from_numpy(arr)


class PointCloud(Dataset2D):
    """The rows of a user's point file (see ``load_points``), drawn uniformly with replacement.

    ``points``: float32 (N, 2), read and checked in the constructor. There is no analytic
    density: ``has_density`` is False and ``log_prob`` returns None.
    """

    has_density = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.points = load_points(self.path, dim=self.dim)
        self._on_device = self.points

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self._on_device.device != generator.device:
            self._on_device = self.points.to(generator.device)
        idx = torch.randint(0, len(self.points), (n,), generator=generator, device=generator.device)
        return self._on_device[idx]

    def log_prob(self, x: torch.Tensor) -> None:
        return None
