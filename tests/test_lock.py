"""One training per run folder (issue 30): while a job trains in a workdir, a second training there (a rerun of
the pipeline after Snakemake itself was killed) refuses at once, naming the holder; when the holder ends, however
it ends, the folder is free again. Locally with two processes, and on the test cluster with two SLURM jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from f2d2.cli.main import main
from f2d2.io.checkpoint import load_checkpoint
from f2d2.training.lock import LOCK_NAME, workdir_lock

RUN = {
    "seed": 2,
    "data": {"name": "checkerboard"},
    "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2},
    "train": {"steps": 1_000_000, "batch_size": 64, "lr": 1e-3, "warmup": 5, "log_every": 5, "ckpt_every": 10},
}


def held_by(workdir: Path, deadline_s: float = 300) -> dict:
    """The holder's record in workdir/train.lock, once the first training has written it."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            who = json.loads((workdir / LOCK_NAME).read_text() or "{}")
        except (OSError, ValueError):
            who = {}
        if who.get("pid"):
            return who
        time.sleep(0.1)
    raise AssertionError(f"no training took {workdir / LOCK_NAME} in {deadline_s} s")


def test_a_second_training_in_a_busy_folder_refuses_naming_the_holder(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(RUN))
    work = tmp_path / "run"
    args = ["train", "--config", str(config), "--workdir", str(work), "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "f2d2.cli.main", *args], stdout=subprocess.DEVNULL)
    try:
        who = held_by(work)
        assert who["pid"] == first.pid and who["slurm_job_id"] is None
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"f2d2 train: error: {work} is being trained by a process outside SLURM (pid {first.pid}")
        assert "a second training in the same folder is refused" in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed, its lock went with it: the folder is free again, and its holder record is this process's now
    with workdir_lock(work):
        assert held_by(work)["pid"] == os.getpid()


@pytest.mark.slurm
def test_a_second_slurm_job_in_a_busy_folder_fails_naming_the_first_jobs_id(tmp_path, slurm_cluster):
    from test_slurm import env, job_id, sacct, submit_cmd, train_config

    config, work = train_config(tmp_path), tmp_path / "run"
    first = subprocess.Popen(submit_cmd(work, config, slurm_cluster), env=env(), stdout=subprocess.DEVNULL)
    try:
        jid = job_id(work / "logs")
        who = held_by(work)
        assert who["slurm_job_id"] == jid
        cmd = submit_cmd(work, config, slurm_cluster)
        cmd[cmd.index("--log-dir") + 1] = str(work / "logs2")  # the same run folder, a log folder of its own
        second = subprocess.run(
            cmd,
            env=env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        said = second.stdout + second.stderr
        assert second.returncode != 0 and f"is being trained by SLURM job {jid}" in said, said[-3000:]
        assert f"scancel {jid}" in said
        (record,) = sacct(job_id(work / "logs2"), timeout=120)
        assert record["State"].split()[0] == "FAILED"
    finally:
        first.wait(timeout=600)
    assert load_checkpoint(work / "checkpoint.pt")["step"] == yaml.safe_load(config.read_text())["train"]["steps"]
