"""A user's own point set read from a .npy or .csv file: data (t = 1) with no analytic density."""

from __future__ import annotations

import warnings
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


DEFAULT_TEST_FRACTION = 0.2  # held out when a points config gives neither test_path nor test_fraction


def split_problem(test_path: str | None, test_fraction: float | None) -> str | None:
    """The one-line problem when both ways of holding out test points are given, else None."""
    if test_path is not None and test_fraction is not None:
        return (
            f"data.test_path = {str(test_path)!r} and data.test_fraction = {test_fraction!r} are both set; "
            "expected one of them: a separate test file, or the share of data.path's rows held out"
        )
    return None


def _row_ids(rows: np.ndarray) -> np.ndarray:
    """An id per row (N,), equal for rows of equal values (0.0 and -0.0 alike)."""
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


class PointCloud(Dataset2D):
    """A user's point file (see ``load_points``) split into training rows and held-out test rows.

    ``train``, ``test``: float32 (N_train, 2), (N_test, 2); no row of ``test`` equals a row of ``train``.
    ``sample`` draws training rows uniformly with replacement; ``test_points`` gives held-out rows.

    The test rows are those of ``test_path`` (rows that also occur in ``path`` are left out, with a
    warning), or else a ``test_fraction`` (default 0.2) of the file's distinct rows, chosen by a
    permutation seeded with ``split_seed``; copies of a row stay on one side. There is no analytic
    density: ``has_density`` is False and ``log_prob`` returns None.
    """

    has_density = False
    has_test_split = True

    def __init__(
        self,
        path: str | Path,
        test_path: str | Path | None = None,
        test_fraction: float | None = None,
        split_seed: int = 0,
    ):
        problem = split_problem(test_path, test_fraction)
        if problem:
            raise DataError(problem)
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
            raise DataError(f"data.split_seed = {split_seed!r}; expected an integer >= 0")
        self.path, self.split_seed = Path(path), split_seed
        self.test_path = None if test_path is None else Path(test_path)
        self.test_fraction = None
        rows = load_points(self.path, dim=self.dim)
        if self.test_path is None:
            self.test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
            self.train, self.test = self._split(rows)
        else:
            self.train, self.test = rows, self._test_file(rows)
        self._on_device = self.train

    def _split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) rows of the file: a seeded choice of ``test_fraction`` of its distinct rows is held out."""
        f = self.test_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise DataError(
                f"data.test_fraction = {f!r}; expected a number in (0, 1), the share of "
                f"{self.path}'s rows held out for testing"
            )
        ids = _row_ids(rows.numpy())
        distinct = int(ids.max()) + 1
        if distinct < 2:
            raise DataError(
                f"data.path = {str(self.path)!r} holds {distinct} distinct row(s); a held-out split "
                "needs at least 2: add rows, or give the test points as data.test_path"
            )
        k = min(max(round(f * distinct), 1), distinct - 1)
        perm = torch.randperm(distinct, generator=torch.Generator().manual_seed(self.split_seed))
        held = torch.zeros(distinct, dtype=torch.bool)
        held[perm[:k]] = True
        is_test = held[torch.from_numpy(ids)]
        return rows[~is_test], rows[is_test]

    def _test_file(self, train: torch.Tensor) -> torch.Tensor:
        """The rows of ``test_path`` that are not rows of the training file."""
        try:
            test = load_points(self.test_path, dim=self.dim)
        except DataError as e:
            raise DataError(f"data.test_path: {e}") from None
        ids = _row_ids(np.concatenate([train.numpy(), test.numpy()]))
        in_train = np.zeros(int(ids.max()) + 1, dtype=bool)
        in_train[ids[: len(train)]] = True
        shared = in_train[ids[len(train) :]]
        if shared.all():
            raise DataError(
                f"data.test_path: all {len(test)} rows of {self.test_path} are also rows of "
                f"data.path = {str(self.path)!r}; expected held-out points that training never sees"
            )
        if shared.any():
            warnings.warn(
                f"data.test_path: {int(shared.sum())} of {len(test)} rows of {self.test_path} are also "
                f"rows of data.path = {str(self.path)!r}; they are left out of the test points",
                stacklevel=2,
            )
        return test[torch.from_numpy(~shared)]

    @property
    def test_source(self) -> str:
        """Where the test points come from, in words (the tables' ``test_split`` column)."""
        if self.test_path is not None:
            return f"test file {self.test_path}"
        return f"held-out {100 * self.test_fraction:g}% of {self.path} (split seed {self.split_seed})"

    def test_points(self, n: int, seed: int) -> torch.Tensor:
        """All held-out rows (in order) when n >= their number, else a seeded random subset of n, float32 (n, 2)."""
        if n >= len(self.test):
            return self.test
        idx = torch.randperm(len(self.test), generator=torch.Generator().manual_seed(seed))[:n]
        return self.test[idx.sort().values]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self._on_device.device != generator.device:
            self._on_device = self.train.to(generator.device)
        idx = torch.randint(0, len(self.train), (n,), generator=generator, device=generator.device)
        return self._on_device[idx]

    def log_prob(self, x: torch.Tensor) -> None:
        return None
