"""Helpers for the tests against the real SLURM test cluster: ``sacct`` (SLURM's accounting records of jobs), and
holding a job mid-training: ``hold_env`` puts this file on the job's PYTHONPATH as sitecustomize.py. The first
attempt of the job named $F2D2_HOLD_JOB that reaches training step $F2D2_HOLD_STEP writes the file
$F2D2_HOLD_MARKER and waits there until the file $F2D2_HOLD_RELEASE exists (or it is killed); later attempts find
the marker and train straight on. So a test acts while the job is mid-training, however fast or busy the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_JOB_NAME") == os.environ.get("F2D2_HOLD_JOB"):
    from f2d2.training import loop

    _marker, _release = Path(os.environ["F2D2_HOLD_MARKER"]), Path(os.environ["F2D2_HOLD_RELEASE"])
    _step, _check = int(os.environ["F2D2_HOLD_STEP"]), loop.check_terms

    def _check_terms(values, step, *args, **kwargs):
        if step == _step and not _marker.exists():
            _marker.write_text(f"job {os.environ['SLURM_JOB_ID']} held at step {step}\n")
            while not _release.exists():
                time.sleep(0.05)
        return _check(values, step, *args, **kwargs)

    loop.check_terms = _check_terms


def hold_env(tmp: Path, job_name: str, step: int) -> tuple[dict, Path, Path]:
    """Environment variables that hold the SLURM job ``job_name`` at ``step``, the marker the held attempt
    writes and the file that releases it (neither exists yet)."""
    hook = tmp / "hold-hook"
    hook.mkdir(exist_ok=True)
    shutil.copyfile(__file__, hook / "sitecustomize.py")
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    marker, release = tmp / "held", tmp / "release"
    env = {
        "PYTHONPATH": path,
        "F2D2_HOLD_JOB": job_name,
        "F2D2_HOLD_STEP": str(step),
        "F2D2_HOLD_MARKER": str(marker),
        "F2D2_HOLD_RELEASE": str(release),
    }
    return env, marker, release


def wait_for(path: Path, what: str, timeout: float = 300, alive=None) -> None:
    """Wait until ``path`` exists; fail naming ``what`` after ``timeout`` s or once ``alive()`` is False."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or (alive is not None and not alive()):
            raise AssertionError(f"{what}: {path} did not appear")
        time.sleep(0.1)


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}


def sacct(*job_ids: str, timeout: float = 30) -> list[dict]:
    """SLURM's accounting records (one per attempt: -D) of the jobs' allocations, once all have ended."""
    fields = ["JobID", "JobName", "State", "ExitCode", "Submit", "Start", "End"]
    deadline = time.time() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-D", "-j", ",".join(job_ids), "-o", ",".join(fields)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]
        last = {r["JobID"]: r["State"].split()[0] for r in rows}
        if set(last) == set(job_ids) and all(s in FINAL for s in last.values()):
            return rows
        if time.time() > deadline:
            raise AssertionError(f"sacct has no final record for all of {job_ids} after {timeout}s: {rows}")
        time.sleep(0.5)


def seconds(stamp: str) -> float:
    """An accounting timestamp (2026-12-03T12:59:18) in seconds since the epoch."""
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
