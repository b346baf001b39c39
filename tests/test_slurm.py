"""Against the real single-node SLURM cluster that scripts/test.sh starts (slurmctld, slurmd, slurmdbd,
munge, MariaDB): jobs are real SLURM jobs (checked in SLURM's accounting, `sacct`), preemption and time
limits requeue a training job that resumes to the same result, a failing job reports its id, error and
logs, and Snakemake waits for many jobs without spinning."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from f2d2.config import experiment
from f2d2.config.resolve import resolve_run
from f2d2.io.checkpoint import load_checkpoint
from f2d2.preflight.runs import own_flow_stages
from f2d2.training.loop import train
from pipeline_helpers import assert_same_tables, snakemake, tiny_config
from slurm_helpers import sacct, seconds

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS, CKPT_EVERY = 4000, 1000


def env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


def train_config(tmp: Path) -> Path:
    """One flow-matching run of ~10-20 s on one CPU: long enough to be interrupted."""
    cfg = {
        "seed": 4,
        "data": {"name": "checkerboard"},
        "model": {"arch": "mlp", "hidden": 64, "depth": 3, "time_freqs": 4},
        "objective": {"name": "flow_matching"},
        "train": {
            "steps": STEPS,
            "batch_size": 256,
            "lr": 1e-3,
            "warmup": 10,
            "ema_decay": 0.99,
            "log_every": 100,
            "ckpt_every": CKPT_EVERY,
        },
        "stages": {"fm": {}},
    }
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def submit_cmd(workdir: Path, config: Path, partition: str, *extra: str, train_args: tuple = ()) -> list[str]:
    return [
        str(BIN / "f2d2"),
        "submit",
        "--cluster",
        "slurm",
        "--partition",
        partition,
        "--log-dir",
        str(workdir / "logs"),
        *extra,
        "--",
        "train",
        "--config",
        str(config),
        "--stage",
        "fm",
        "--workdir",
        str(workdir),
        "--no-progress",
        *train_args,
    ]


def job_id(log_dir: Path, timeout: float = 30) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            jid = json.loads((log_dir / "job.json").read_text())["job_id"]
        except (OSError, ValueError, KeyError):
            jid = None
        if jid:
            return str(jid)
        time.sleep(0.2)
    raise AssertionError(f"no job id in {log_dir / 'job.json'} after {timeout}s")


def wait_for_progress(workdir: Path, lines: int, timeout: float = 90) -> None:
    log = workdir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= lines:
            return
        time.sleep(0.1)
    raise AssertionError(f"{log} did not reach {lines} lines in {timeout}s")


def log_rows(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, uninterrupted, in this process."""
    tmp = tmp_path_factory.mktemp("reference")
    config = train_config(tmp)
    torch.set_num_threads(1)
    train(resolve_run(yaml.safe_load(config.read_text()), "fm"), tmp / "run", progress=False)
    return config, tmp / "run"


def assert_same_run(workdir: Path, ref: Path) -> None:
    got, want = load_checkpoint(workdir / "checkpoint.pt"), load_checkpoint(ref / "checkpoint.pt")
    assert got["step"] == want["step"] == STEPS
    for part in ("model", "ema"):
        different = [k for k in want[part] if not torch.equal(got[part][k], want[part][k])]
        assert not different, f"{part} tensors differ from the uninterrupted run: {different}"
    assert log_rows(workdir) == log_rows(ref)


def logged_steps(log_dir: Path, jid: str, what: str) -> list[int]:
    """Steps of the job's 'stop signal: saved ...' or 'resuming from ...' lines, over all attempts."""
    text = "".join(p.read_text(errors="replace") for p in sorted(log_dir.glob(f"{jid}_*_log.out")))
    return [int(s) for s in re.findall(rf"{what} \S+ at step (\d+)", text)]


def test_job_is_a_slurm_job_and_the_wait_does_not_spin(tmp_path, slurm_cluster, reference):
    config, _ = reference
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(
        submit_cmd(tmp_path / "run", config, slurm_cluster, "--job-name", "f2d2-probe"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr
    jid = job_id(tmp_path / "run" / "logs")
    (record,) = sacct(jid)
    assert record["State"] == "COMPLETED" and record["JobName"] == "f2d2-probe" and record["ExitCode"] == "0:0"
    assert json.loads((tmp_path / "run" / "logs" / "job.json").read_text())["state"] == "COMPLETED"
    # The job ran under slurmd, not under the waiting process: the waiter's CPU time is its own.
    waiter_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    overhead = seconds(record["Start"]) - seconds(record["Submit"])
    print(f"\nwall {wall:.1f}s, waiter CPU {waiter_cpu:.2f}s, SLURM submit-to-start {overhead:.0f}s")
    assert waiter_cpu < 0.25 * wall, f"the waiting `f2d2 submit` used {waiter_cpu:.1f}s CPU in {wall:.1f}s"


@pytest.mark.parametrize("how", ["preempt-signal", "scontrol-requeue"])
def test_interrupted_training_requeues_and_ends_like_an_uninterrupted_run(tmp_path, slurm_cluster, reference, how):
    config, ref = reference
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        submit_cmd(workdir, config, slurm_cluster), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    jid = job_id(workdir / "logs")
    wait_for_progress(workdir, lines=5)  # step 500 of 4000: mid-training, before the first checkpoint
    if how == "preempt-signal":  # what SLURM sends ahead of preemption / the time limit (submitit's signal)
        subprocess.run(["scancel", "--signal=USR2", jid], check=True)
    else:
        subprocess.run(["scontrol", "requeue", jid], check=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    attempts = sacct(jid)
    assert [a["State"].split()[0] for a in attempts] == ["REQUEUED", "COMPLETED"], attempts
    # The signal saved a checkpoint at the end of the step it arrived in (not at a multiple of ckpt_every);
    # the requeued job resumed from it or, after SIGTERM (training goes on until SLURM's SIGKILL, KillWait
    # seconds later), a later one: on a fast machine the last, when the first attempt finished in those seconds.
    (saved,) = logged_steps(workdir / "logs", jid, "stop signal: saved")
    (resumed,) = logged_steps(workdir / "logs", jid, "resuming from")
    assert 0 < saved < STEPS and saved % CKPT_EVERY != 0, saved
    last = STEPS if how == "scontrol-requeue" else STEPS - 1  # after SIGUSR2 the attempt stops at once
    assert saved <= resumed <= last, (saved, resumed)
    assert_same_run(workdir, ref)


HOLD_AT = 500  # the step at which the time-limit test's first attempt waits for the warning

# Put on a job's PYTHONPATH as sitecustomize.py with $F2D2_TEST_HOLD naming a marker file: the job's
# first attempt that reaches step HOLD_AT writes the marker and waits there (SIGUSR2 still interrupts the
# wait) until a stop signal is pending; the signal then stops training one step later, as always. Later
# attempts (the marker exists) train straight on. So the attempt is running, whatever the machine's speed,
# when SLURM's time-limit warning arrives. SIGUSR2 is caught from the interpreter's start: a warning that
# comes before the job's own handlers (submitit's, then the loop's; importing torch can take longer than
# the 5 s the warning may come after) is sent again once the training loop listens.
HOLD_HOOK = f"""
import os
import signal
import time
from pathlib import Path

if os.environ.get("SLURM_JOB_ID") and os.environ.get("F2D2_TEST_HOLD"):
    early = []  # SIGUSR2 before submitit's handler replaced this one
    signal.signal(signal.SIGUSR2, lambda signum, frame: early.append(signum))

    from f2d2.training import loop, preemption

    marker = Path(os.environ["F2D2_TEST_HOLD"])
    active = []  # the StopSignals of this process, the training loop's the last
    enter, check = preemption.StopSignals.__enter__, loop.check_terms

    def _enter(self):
        active.append(self)
        entered = enter(self)
        if early:
            early.clear()
            os.kill(os.getpid(), signal.SIGUSR2)
        return entered

    def _check_terms(values, step, *args, **kwargs):
        if step == {HOLD_AT} and not marker.exists():
            marker.write_text(f"held at step {{step}}\\n")
            while not active[-1].pending:
                time.sleep(0.05)
        return check(values, step, *args, **kwargs)

    preemption.StopSignals.__enter__ = _enter
    loop.check_terms = _check_terms
"""


def test_time_limit_checkpoints_requeues_and_finishes(tmp_path, slurm_cluster, reference):
    """A 1-minute limit, warned 55 s ahead: SLURM sends the warning at its first time-limit check (every
    30 s) after the job's fifth second, so 5-35 s into each attempt (a warning in the first second or
    two, before Python has installed its handlers, would kill the job: HOLD_HOOK catches it from the
    interpreter's start). However fast the machine, the job is still training then: an attempt that reaches
    step HOLD_AT first waits there for the stop signal (HOLD_HOOK). The warning saves a checkpoint, requeues
    the job, and the run still ends in the uninterrupted run's state."""
    config, ref = reference
    workdir = tmp_path / "run"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_HOOK)
    marker = tmp_path / "held"
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    cmd = submit_cmd(workdir, config, slurm_cluster, "--time-min", "1", "--signal-delay-s", "55")
    proc = subprocess.run(
        cmd,
        env={**env(), "PYTHONPATH": path, "F2D2_TEST_HOLD": str(marker)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == f"held at step {HOLD_AT}\n"  # the hook was in place and held an attempt
    jid = job_id(workdir / "logs")
    states = [a["State"].split()[0] for a in sacct(jid)]
    assert states[-1] == "COMPLETED" and states.count("REQUEUED") >= 1, states
    err = "".join(p.read_text(errors="replace") for p in (workdir / "logs").glob(f"{jid}_*_log.err"))
    assert "this job is timed-out" in err  # submitit's handler saw the time-limit warning, not a preemption
    saved = logged_steps(workdir / "logs", jid, "stop signal: saved")
    assert saved and HOLD_AT + 1 in saved, saved  # the held attempt stopped right after its hold
    assert logged_steps(workdir / "logs", jid, "resuming from")
    assert_same_run(workdir, ref)


def test_failing_job_names_its_slurm_id_error_and_logs(tmp_path, slurm_cluster):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"data": {"name": "points", "path": str(tmp_path / "missing.npy")}, "stages": {"fm": {}}})
    )
    proc = subprocess.run(
        submit_cmd(tmp_path / "run", bad, slurm_cluster), env=env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    jid = job_id(tmp_path / "run" / "logs")
    assert sacct(jid)[-1]["State"].split()[0] == "FAILED"
    assert f"job {jid} on cluster 'slurm' failed" in proc.stderr
    assert "missing.npy" in proc.stderr  # the job's own error, from its log
    assert str(tmp_path / "run" / "logs" / f"{jid}_0_log.err") in proc.stderr


def test_pipeline_through_the_slurm_profile_matches_the_local_profile(tmp_path, slurm_cluster, pipeline):
    """The tiny pipeline with `--profile workflow/profiles/slurm` (partition from $F2D2_PARTITION): every
    training and evaluation job is a SLURM job that SLURM's accounting shows completed; the cells go out
    concurrently; Snakemake and its waiting `f2d2 submit` processes sleep rather than spin; and the
    tables equal the local profile's for the same seeds (Table 4 holds wall-clock times: layout only)."""
    _, local_config, local_out = pipeline
    config = tiny_config(tmp_path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    snakemake(tmp_path, config, profile="slurm")
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = tmp_path / "results"

    records = [json.loads(p.read_text()) for p in out.rglob("job.json")]
    cfg = yaml.safe_load(config.read_text())
    runs, solves = experiment.runs(cfg), 1 + len(own_flow_stages(cfg))
    importance = len(experiment.f2d2_stages(cfg)) + 1  # a job per F2D2 stage and one for the teacher
    # a training and an evaluation bundle per run, the dopri5 solves, importance sampling and the frontier
    assert len(records) == 2 * len(runs) + solves + importance + 1, sorted(r["job_name"] for r in records)
    assert all(r["cluster"] == "slurm" for r in records)
    ids = [r["job_id"] for r in records]
    assert all(i.isdigit() for i in ids), ids
    accounting = sacct(*ids, timeout=60)
    assert {r["JobID"] for r in accounting} == set(ids)
    assert all(r["State"] == "COMPLETED" for r in accounting), [r for r in accounting if r["State"] != "COMPLETED"]

    events = sorted([(seconds(r["Submit"]), 1) for r in accounting] + [(seconds(r["End"]), -1) for r in accounting])
    in_flight, most = 0, 0
    for _, change in events:
        in_flight += change
        most = max(most, in_flight)
    tree_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # reported only
    print(
        f"\n{len(ids)} SLURM jobs in {wall:.0f}s; at most {most} submitted and not ended at once; "
        f"Snakemake + waiters used {tree_cpu:.0f}s CPU"
    )
    assert most >= 4, f"the jobs went out one at a time (at most {most} in flight)"
    # Sleeping, not spinning: each waiter's CPU while its job was queued or running (its own and its sacct
    # calls') is a small share of that wait, however fast the machine (a spinning waiter would use all of it).
    spin = [
        (r["job_id"], r["wait_cpu_seconds"], r["wait_seconds"])
        for r in records
        if r["wait_cpu_seconds"] > 0.25 * r["wait_seconds"] + 0.5
    ]
    assert spin == [], f"waiters that used most of their wait in CPU (job, cpu s, wait s): {spin}"

    assert_same_tables(out, local_out)


def test_failed_rule_names_the_slurm_job_and_the_rerun_redoes_only_it(tmp_path, slurm_cluster):
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    warm = tmp_path / "warm.pt"
    warm.write_bytes(b"not a checkpoint")  # exists (the start-up checks pass) but cannot be read: fails in the job
    cfg["stages"]["warm"] = {
        **cfg["stages"]["teacher"],
        "train": {**cfg["stages"]["teacher"]["train"], "init_from": str(warm)},
    }
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "results" / "train"
    targets = [str(out / "teacher" / "train.json"), str(out / "warm" / "train.json")]

    failed = snakemake(tmp_path, config, "-k", *targets, profile="slurm", check=False)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0
    jid = json.loads((out / "warm" / "logs" / "job.json").read_text())["job_id"]
    assert f"job {jid} on cluster 'slurm' failed" in said and str(warm) in said
    assert str(out / "warm" / "logs" / f"{jid}_0_log.err") in said
    assert sacct(jid)[-1]["State"].split()[0] == "FAILED"
    teacher_done = (out / "teacher" / "train.json").stat().st_mtime_ns

    warm.write_bytes((out / "teacher" / "checkpoint.pt").read_bytes())  # fix the cause
    snakemake(tmp_path, config, *targets, profile="slurm")
    assert (out / "warm" / "train.json").exists()
    assert (out / "teacher" / "train.json").stat().st_mtime_ns == teacher_done  # not redone
    assert json.loads((out / "warm" / "logs" / "job.json").read_text())["job_id"] != jid
