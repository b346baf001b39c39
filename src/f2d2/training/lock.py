"""One training at a time per run folder: the process that trains in a workdir holds an exclusive lock on its
``train.lock`` (``flock``, released by the kernel when the process ends, however it ends) and writes who it is
there; a second training in the same folder (a rerun of the pipeline while the first job still runs, after
Snakemake itself was killed) refuses at once, naming the holder's SLURM job id, pid and host."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from f2d2.training.failures import TrainingError

LOCK_NAME = "train.lock"


class FolderBusy(TrainingError):
    """Another process trains in this workdir."""


def holder() -> dict:
    """Who this process is: SLURM job id (None outside SLURM), pid and host."""
    return {"slurm_job_id": os.environ.get("SLURM_JOB_ID"), "pid": os.getpid(), "host": socket.gethostname()}


def describe(who: dict) -> str:
    where = f"pid {who.get('pid')} on {who.get('host')}"
    job = who.get("slurm_job_id")
    return f"SLURM job {job} ({where})" if job else f"a process outside SLURM ({where})"


@contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Hold ``workdir``/train.lock while training; FolderBusy naming the holder if another process holds it."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                who = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except ValueError:
                who = {}
            job = who.get("slurm_job_id")
            raise FolderBusy(
                f"{workdir} is being trained by {describe(who)}; a second training in the same folder is refused: "
                + (f"wait for that job or cancel it (scancel {job})" if job else "wait for that process to end")
            ) from None
        record = json.dumps(holder()).encode()
        if os.pread(fd, len(record) + 1, 0) != record:  # a restart by the same holder leaves the folder untouched
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        yield
    finally:
        os.close(fd)  # releases the lock
