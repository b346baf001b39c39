"""A user's point file is split into training and held-out test rows, and no test row is ever a training row:
the split, its determinism, a separate test file, the one-line errors, ``f2d2 data`` and the early-stop split."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import yaml

from f2d2.cli import main
from f2d2.config.resolve import ConfigError, resolve_run
from f2d2.data import DataError, PointCloud, make_dataset
from f2d2.preflight.checks import run_problems
from f2d2.training.early_stop import validation_split


def shared_rows(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many rows of ``a`` equal some row of ``b``."""
    return int((a[:, None, :] == b[None, :, :]).all(-1).any(1).sum())


def as_set(x: torch.Tensor) -> set[tuple[float, float]]:
    return {tuple(r) for r in x.tolist()}


@pytest.fixture
def with_copies(tmp_path):
    """60 distinct rows, each 1 to 5 times, shuffled: 0.0 and -0.0 among them (equal values)."""
    rng = np.random.default_rng(1)
    distinct = rng.normal(size=(60, 2)).astype(np.float32)
    distinct[0], distinct[1] = [0.0, 1.0], [-0.0, 2.0]
    rows = np.repeat(distinct, rng.integers(1, 6, 60), axis=0)
    rows = np.concatenate([rows, [[0.0, 2.0]]])  # equal to [-0.0, 2.0]
    path = tmp_path / "copies.npy"
    np.save(path, rows[rng.permutation(len(rows))])
    return path, len(rows)


@pytest.mark.parametrize("fraction, seed", [(0.2, 0), (0.5, 3), (0.05, 7), (0.9, 1)])
def test_held_out_rows_never_equal_a_training_row(with_copies, fraction, seed):
    path, n = with_copies
    data = PointCloud(path, test_fraction=fraction, split_seed=seed)
    assert shared_rows(data.test, data.train) == 0 and shared_rows(data.train, data.test) == 0
    assert len(data.train) + len(data.test) == n  # every row on one side; copies kept
    assert len(as_set(data.test)) == round(fraction * 60)  # the fraction counts distinct rows
    drawn = data.sample(5000, torch.Generator().manual_seed(0))
    assert shared_rows(drawn, data.test) == 0 and shared_rows(drawn, data.train) == len(drawn)


def test_split_is_deterministic_and_follows_split_seed(with_copies, tmp_path):
    path, _ = with_copies
    a, b = PointCloud(path), PointCloud(path)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert as_set(PointCloud(path, split_seed=1).test) != as_set(a.test)
    reordered = tmp_path / "reordered.csv"  # the same rows in another order and format: the same split
    np.savetxt(reordered, np.load(path)[::-1], delimiter=",", header="x,y", comments="")
    assert as_set(PointCloud(reordered).test) == as_set(a.test)
    assert a.test_source == f"held-out 20% of {path} (split seed 0)"


def test_test_points_are_all_held_out_rows_or_a_seeded_subset(with_copies):
    data = PointCloud(with_copies[0], test_fraction=0.5)
    assert torch.equal(data.test_points(10**6, seed=0), data.test)  # n >= the held-out count: all, in order
    sub = data.test_points(20, seed=4)
    assert sub.shape == (20, 2) and torch.equal(sub, data.test_points(20, seed=4))
    assert not torch.equal(sub, data.test_points(20, seed=5))
    assert shared_rows(sub, data.test) == 20 and shared_rows(sub, data.train) == 0


def test_a_test_file_keeps_every_training_row_and_drops_the_rows_it_shares(tmp_path):
    train = np.random.default_rng(0).normal(size=(30, 2))
    test = np.concatenate([np.random.default_rng(1).normal(size=(8, 2)), train[[3, 17]]])
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", test)
    with pytest.warns(UserWarning, match=r"data.test_path: 2 of 10 rows of .*test.npy are also rows of data.path"):
        data = make_dataset(
            {"name": "points", "path": str(tmp_path / "train.npy"), "test_path": str(tmp_path / "test.npy")}
        )
    assert torch.equal(data.train, torch.tensor(train, dtype=torch.float32))
    assert torch.equal(data.test, torch.tensor(test[:8], dtype=torch.float32))
    assert data.test_source == f"test file {tmp_path / 'test.npy'}"
    np.save(tmp_path / "apart.npy", test[:8])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing shared: no warning
        PointCloud(tmp_path / "train.npy", test_path=tmp_path / "apart.npy")


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize(
    "options, words",
    [
        (
            {"test_fraction": 0.3, "test_path": "test.npy"},
            ["data.test_path = ", "data.test_fraction = 0.3", "both set", "expected one of them"],
        ),
        ({"test_fraction": 0.0}, ["data.test_fraction = 0.0", "expected a number in (0, 1)"]),
        ({"test_fraction": 1}, ["data.test_fraction = 1", "expected a number in (0, 1)"]),
        ({"test_fraction": True}, ["data.test_fraction = True", "expected a number in (0, 1)"]),
        ({"split_seed": -1}, ["data.split_seed = -1", "expected an integer >= 0"]),
        ({"test_path": "wide.npy"}, ["data.test_path:", "wide.npy", "shape (4, 3)", "(N, 2)"]),
        (
            {"test_path": "train.npy"},
            ["data.test_path:", "all 6 rows", "also rows of data.path", "expected held-out points"],
        ),
        ({"path": "one.npy"}, ["data.path = ", "1 distinct row", "at least 2", "data.test_path"]),
    ],
)
def test_bad_split_options_fail_in_one_line_naming_the_key(tmp_path, monkeypatch, options, words):
    monkeypatch.chdir(tmp_path)
    np.save("train.npy", np.arange(12.0).reshape(6, 2))
    np.save("test.npy", -np.ones((3, 2)))
    np.save("wide.npy", np.ones((4, 3)))
    np.save("one.npy", np.ones((5, 2)))
    with pytest.raises(DataError) as err:
        make_dataset({"name": "points", "path": "train.npy", **options})
    msg = one_line(err)
    for w in words:
        assert w in msg, (w, msg)


def test_config_checks_refuse_both_a_test_file_and_a_fraction_and_check_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("train.npy", np.arange(12.0).reshape(6, 2))

    def problems(**options):
        run = resolve_run(
            {"data": {"name": "points", "path": "train.npy", **options}, "stages": {"teacher": {}}}, "teacher"
        )
        return run_problems(run)

    assert problems() == [] and problems(test_fraction=0.5, split_seed=2) == []
    both = problems(test_path="train.npy", test_fraction=0.5)
    assert len(both) == 1 and "data.test_path" in both[0] and "data.test_fraction = 0.5" in both[0]
    assert problems(test_path="missing.npy") == [
        f"data.test_path = 'missing.npy' is not an existing file (relative paths start from {tmp_path})"
    ]
    with pytest.raises(ConfigError, match=r"data.test_fraction = 1.5; expected a number in \(0, 1\)"):
        problems(test_fraction=1.5)
    with pytest.raises(ConfigError, match=r"data.split_seed = -1; expected an integer >= 0"):
        problems(split_seed=-1)
    cb = resolve_run({"data": {"name": "checkerboard", "test_fraction": 0.2}, "stages": {"teacher": {}}}, "teacher")
    assert "data 'checkerboard' has no option(s) ['test_fraction']" in run_problems(cb)[0]


def write_config(tmp_path, data: dict):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    return str(path)


def test_f2d2_data_writes_only_held_out_rows_and_says_where_they_come_from(with_copies, tmp_path, capsys):
    path, _ = with_copies
    config = write_config(tmp_path, {"name": "points", "path": str(path), "test_fraction": 0.25})
    data = PointCloud(path, test_fraction=0.25)
    out, summary = tmp_path / "test_points.npy", tmp_path / "test_points.json"
    assert (
        main(["data", "--config", config, "--n", "5", "--seed", "9", "--out", str(out), "--summary", str(summary)]) == 0
    )
    written = torch.from_numpy(np.load(out))
    assert torch.equal(written, data.test_points(5, 9)) and shared_rows(written, data.train) == 0
    record = json.loads(summary.read_text())
    source = f"held-out 25% of {path} (split seed 0)"
    assert record == {
        "data": "points",
        "source": source,
        "n": 5,
        "n_requested": 5,
        "n_test": len(data.test),
        "seed": 9,
        "test_split": f"{source}: 5 of {len(data.test)} (seed 9)",
    }
    capsys.readouterr()
    assert (
        main(["data", "--config", config, "--n", "100000", "--seed", "9", "--out", str(out), "--summary", str(summary)])
        == 0
    )  # more than there are: all held-out rows, and it says so
    assert "--n 100000 asked for more than the" in capsys.readouterr().out
    assert torch.equal(torch.from_numpy(np.load(out)), data.test)
    assert json.loads(summary.read_text())["test_split"] == f"{source}: all {len(data.test)}"


def test_f2d2_data_summary_alone_and_for_an_analytic_set(tmp_path, capsys):
    config = write_config(tmp_path, {"name": "checkerboard"})
    summary = tmp_path / "s.json"
    assert main(["data", "--config", config, "--n", "300", "--seed", "7", "--summary", str(summary)]) == 0
    assert json.loads(summary.read_text())["test_split"] == "fresh draws from the checkerboard density: 300 (seed 7)"
    assert set(tmp_path.iterdir()) == {tmp_path / "c.yaml", summary}  # no points written without --out
    assert main(["data", "--config", config, "--n", "3", "--seed", "7"]) == 2
    assert "needs --out" in capsys.readouterr().err


def test_early_stop_validation_uses_held_out_rows_of_a_point_file(with_copies):
    data = PointCloud(with_copies[0])
    val = validation_split(data, 10, seed=3)
    assert torch.equal(val, data.test_points(10, 3)) and shared_rows(val, data.train) == 0
