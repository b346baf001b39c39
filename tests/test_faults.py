"""Fault injection: training killed with SIGKILL at seeded random points and restarted ends exactly like an
uninterrupted run; a Snakemake run interrupted with SIGINT and rerun keeps the jobs it had finished."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from f2d2.checkpoint import load_checkpoint
from pipeline_helpers import snakemake, snakemake_cmd, tiny_config

KILLS = 10
STEPS = 200
RUN = {
    "seed": 5,
    "data": {"name": "checkerboard"},
    "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2},
    "train": {"steps": STEPS, "batch_size": 64, "lr": 1e-3, "warmup": 10, "ema_decay": 0.99, "log_every": 1,
              "ckpt_every": 5},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train(config: Path, workdir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "f2d2.cli", "train", "--config", str(config), "--workdir", str(workdir),
           "--no-progress"]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _logged_step(workdir: Path) -> int:
    """The last complete line's step in metrics.jsonl (0 before any)."""
    try:
        lines = (workdir / "metrics.jsonl").read_text().split("\n")[:-1]
    except FileNotFoundError:
        return 0
    return json.loads(lines[-1])["step"] if lines else 0


def _log(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_training_killed_at_random_points_ends_like_an_uninterrupted_run(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(RUN))
    reference = _train(config, tmp_path / "full")  # runs alongside the kills

    work = tmp_path / "killed"
    rng = random.Random(2024)
    targets = sorted(rng.sample(range(2, STEPS - 2), KILLS))
    landed = []  # (step resumed from, step logged when killed) for kills that hit a training process mid-run
    for target in targets:
        target = max(target, _logged_step(work) + 1)  # old log lines past the checkpoint are not progress
        resumed_from = load_checkpoint(work / "checkpoint.pt")["step"] if (work / "checkpoint.pt").exists() else 0
        proc = _train(config, work)
        while proc.poll() is None and _logged_step(work) < target:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            landed.append((resumed_from, _logged_step(work)))
    finished = _train(config, work)
    assert finished.wait() == 0, finished.stderr.read()
    assert reference.wait() == 0, reference.stderr.read()

    print(f"\nkills that landed mid-training (resumed from step, logged step at the kill): {landed}")
    assert len(landed) == KILLS and all(a < b < STEPS for a, b in landed)
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(work / "checkpoint.pt")
    assert a["step"] == b["step"] == STEPS
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert _log(tmp_path / "full") == _log(work)
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []  # no temporaries left behind
