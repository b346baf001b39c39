"""Faults a SLURM user meets, against the real single-node test cluster (scripts/slurm.sh): the node dies under a
training job, and Snakemake itself is killed while its SLURM jobs run. A test acts while a job is held
mid-training at a step (slurm_helpers.hold_env: a file the test controls, not a timer), so none depends on the
machine's speed or load."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from f2d2.io.checkpoint import load_checkpoint
from pipeline_helpers import ROOT, assert_same_tables, load_bench, snakemake, snakemake_cmd, tiny_config
from slurm_helpers import hold_env, sacct, seconds, wait_for

pytestmark = pytest.mark.slurm

FAULTS = load_bench("faults")  # the fault benchmark's cluster helpers: slurm_sh, node_state, job ids
slurm_sh, node_state, job_ids = FAULTS.slurm_sh, FAULTS.node_state, FAULTS.submitted_job_ids


def until(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout:.0f}s (node: {node_state()!r})")
        time.sleep(0.2)


def restore_node() -> None:
    """slurmd running again and the node back in service, whatever the test did to it."""
    if not (Path(os.environ["SLURM_CONF"]).parent / "run" / "slurmd.pid").exists():
        slurm_sh("start-node")
    until(lambda: node_state() in ("idle", "mix", "alloc"), "the node did not return to service", 120)


def live_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def job_logs(log_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("*_log.out")))


def assert_same_training(workdir: Path, reference: Path) -> None:
    got, want = load_checkpoint(workdir / "checkpoint.pt"), load_checkpoint(reference / "checkpoint.pt")
    assert got["step"] == want["step"]
    for part in ("model", "ema"):
        different = [k for k in want[part] if not torch.equal(got[part][k], want[part][k])]
        assert not different, f"{part} tensors differ from the uninterrupted run: {different}"
    rows = [
        [{k: v for k, v in json.loads(line).items() if k != "time"} for line in (d / "metrics.jsonl").open()]
        for d in (workdir, reference)
    ]
    assert rows[0] == rows[1]


HOLD_STEP = 25  # the tiny teacher trains 60 steps and saves every 10: held after its checkpoint at step 20


def test_a_node_failure_under_training_resumes_from_the_last_checkpoint(tmp_path, slurm_cluster, pipeline):
    """slurmd and the job's processes are SIGKILLed mid-training (scripts/slurm.sh fail-node) and slurmd comes
    back once the controller has marked the node down. SLURM records the attempt as NODE_FAIL and requeues
    the job; on this one-node cluster the requeued attempt may also be killed by the controller's late cleanup
    of the failed one, and then the pipeline's rerun submits it again. Either way the training resumes from the
    checkpoint saved before the failure and ends exactly as the local profile's uninterrupted run."""
    _, _, local_out = pipeline
    config = tiny_config(tmp_path)
    workdir = tmp_path / "results" / "train" / "teacher"
    target = str(workdir / "train.json")
    extra, held, _ = hold_env(tmp_path, "train-teacher", HOLD_STEP)
    cmd, env = snakemake_cmd(tmp_path, config, target, profile="slurm")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**env, **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(held, "the teacher's training never reached the hold", alive=lambda: proc.poll() is None)
        said = slurm_sh("fail-node")
        until(lambda: node_state().startswith("down"), "the controller did not mark the node down", 120)
    finally:
        restore_node()
    first = proc.communicate(timeout=900)[0]
    path = "requeued and completed"
    if proc.returncode != 0:
        assert "NODE FAILURE" in first or "NODE_FAIL" in first, first[-4000:]
        snakemake(tmp_path, config, target, profile="slurm")
        path = "ended as failed; the rerun resumed it"

    ids = job_ids(workdir / "logs")
    states = [a["State"].split()[0] for a in sacct(*ids)]
    assert states[0] == "NODE_FAIL" and states[-1] == "COMPLETED", states
    resumed = [int(s) for s in re.findall(r"resuming from \S+ at step (\d+)", job_logs(workdir / "logs"))]
    assert resumed and resumed[0] == 20, resumed  # the last checkpoint before the failure, not a fresh start
    assert_same_training(workdir, local_out / "train" / "teacher")
    print(f"\n{said.strip()}; attempts {states}: {path}; resumed at steps {resumed}")


def test_snakemake_killed_under_the_slurm_profile_loses_nothing_and_trains_once_at_a_time(
    tmp_path, slurm_cluster, pipeline
):
    """SIGKILL of Snakemake while a training job (held mid-training) runs on SLURM, its waiter orphaned. The rerun
    needs `--unlock` first (and says so); then the held job's folder gets no second job while the first runs
    (the new `f2d2 submit` waits for the job its job.json names), the training that finished before the kill is
    not redone, and the tables equal the local profile's."""
    _, _, local_out = pipeline
    config = tiny_config(tmp_path)
    out = tmp_path / "results"
    extra, held, release = hold_env(tmp_path, "train-shortcut", 15)
    cmd, env = snakemake_cmd(tmp_path, config, profile="slurm")
    env = {**env, **extra}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rerun = None
    try:
        wait_for(held, "the shortcut training never reached the hold", alive=lambda: first.poll() is None)
        held_job = held.read_text().split()[1]
        teacher = out / "train" / "teacher"
        assert (teacher / "train.json").exists()  # finished before the kill
        stamps = {p: p.stat().st_mtime_ns for p in (teacher / "checkpoint.pt", teacher / "train.json")}
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert live_state(held_job) == "RUNNING"

        locked = snakemake(tmp_path, config, profile="slurm", check=False)
        assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
        snakemake(tmp_path, config, "--unlock", profile="slurm")
        rerun = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = out / "train" / "shortcut" / "logs" / "snakemake.log"
        waiting = f"SLURM job {held_job} from an earlier submission"
        wait_for_text = lambda: log.exists() and waiting in log.read_text(errors="replace")  # noqa: E731
        until(lambda: wait_for_text() or rerun.poll() is not None, "the rerun never reached the held job", 600)
        assert wait_for_text(), "the rerun did not wait for the held job"
        assert job_ids(out / "train" / "shortcut" / "logs") == [held_job]  # nothing else submitted there yet
    finally:
        release.touch()
    said = rerun.communicate(timeout=1500)[0]
    assert rerun.returncode == 0, said[-6000:]

    ids = job_ids(out / "train" / "shortcut" / "logs")
    attempts = sacct(*ids)
    assert len(ids) == 2 and [a["State"] for a in attempts] == ["COMPLETED", "COMPLETED"], attempts
    assert seconds(attempts[0]["End"]) <= seconds(attempts[1]["Start"]), attempts  # one at a time
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the teacher was not trained again
    assert_same_training(out / "train" / "shortcut", local_out / "train" / "shortcut")
    assert_same_tables(out, local_out)
    print(f"\nheld job {held_job} ran to its end under the rerun's wait; then job {ids[1]} (resumed, nothing to train)")
