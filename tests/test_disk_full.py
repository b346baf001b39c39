"""A full disk (issue 30): training and an evaluation cell writing onto a small real filesystem (a tmpfs the test
mounts; root is needed, as for the test cluster) that fills up. The write fails with a one-line error naming the
path and saying the disk is full, the previous checkpoint and the finished cell stay intact and loadable, and once
space is back the rerun finishes, in the same state as a run that never met a full disk."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from f2d2.cli.main import main
from f2d2.io.checkpoint import load_checkpoint
from pipeline_helpers import ROOT

RUN = {
    "seed": 7,
    "data": {"name": "checkerboard"},
    "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2},
    "train": {"steps": 30, "batch_size": 64, "lr": 1e-3, "warmup": 5, "log_every": 5, "ckpt_every": 10},
}
MOUNT_MB = 4


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk, unmounted afterwards; fails (never skips) where mounting is not allowed."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MOUNT_MB}m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.fail(
            f"this test mounts a small tmpfs (root needed, as scripts/test.sh's cluster needs): "
            f"{done.stderr.decode().strip()}",
            pytrace=False,
        )
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all of ``disk``'s free space but ``leave`` bytes."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def train(config: Path, workdir: Path, steps: int) -> int:
    return main(
        ["train", "--config", str(config), "--workdir", str(workdir), "--no-progress", "--set", f"train.steps={steps}"]
    )


def test_training_on_a_full_disk_keeps_its_checkpoint_and_the_rerun_ends_like_a_clean_run(small_disk, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(RUN))
    assert train(config, tmp_path / "clean", 30) == 0
    work = small_disk / "run"
    assert train(config, work, 10) == 0
    size = (work / "checkpoint.pt").stat().st_size
    capsys.readouterr()

    filler = fill(small_disk, size // 2)  # room for a log line, not for the next checkpoint
    assert train(config, work, 30) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "f2d2 train: error: cannot write" in err and "the disk is full (No space left on device)" in err
    assert str(work / "checkpoint.pt") in err or str(work / "metrics.jsonl") in err
    kept = load_checkpoint(work / "checkpoint.pt")
    assert kept["step"] == 10 and not [p for p in work.iterdir() if ".tmp" in p.name]  # no half-written file left

    os.remove(filler)
    assert train(config, work, 30) == 0
    clean, resumed = load_checkpoint(tmp_path / "clean" / "checkpoint.pt"), load_checkpoint(work / "checkpoint.pt")
    assert resumed["step"] == 30
    for part in ("model", "ema"):
        assert all(torch.equal(clean[part][k], resumed[part][k]) for k in clean[part]), part


def test_an_evaluation_cell_on_a_full_disk_keeps_the_finished_cell(small_disk, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(RUN))
    assert train(config, tmp_path / "model", 5) == 0
    points = tmp_path / "points.npy"
    data = ["data", "--config", str(ROOT / "config" / "config.yaml"), "--n", "20000", "--seed", "0"]
    assert main([*data, "--out", str(points)]) == 0
    cell = small_disk / "K1.csv"
    args = ["nll", "--checkpoint", str(tmp_path / "model" / "checkpoint.pt"), "--points", str(points), "--steps", "1"]
    assert main([*args, "--out", str(cell)]) == 0
    before = cell.read_bytes()
    capsys.readouterr()

    fill(small_disk, len(before) // 2)
    assert main([*args, "--steps", "2", "--out", str(cell)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"f2d2 nll: error: cannot write {cell}: the disk is full")
    assert cell.read_bytes() == before and not [p for p in small_disk.iterdir() if ".tmp" in p.name]
