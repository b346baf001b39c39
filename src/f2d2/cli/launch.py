"""Run one ``f2d2`` CLI invocation as a job: on SLURM, on this machine, or in this process.

A Snakemake rule calls ``f2d2 submit --cluster {inline,local,slurm} --log-dir DIR -- <subcommand> ...``
with the same command under every profile; only ``--cluster`` (or ``F2D2_CLUSTER``) changes. The call
blocks until the job ends. Its logs land in ``log_dir`` (put it next to the rule's outputs): submitit's
``<job_id>_<task>_log.out`` / ``.err`` and pickles, plus ``job.json``, a record of the job (id, cluster,
command, resources, timestamps, ``wall_seconds`` from submission to completion as seen here, the wait's
``wait_seconds`` and ``wait_cpu_seconds`` (what waiting cost this process), state, log
paths, and the waiting process's ``waiter`` host and pid). If the job fails, :class:`LaunchError` says which
job, where, what command, the tail of its error log and where the full logs are.

On SLURM a job outlives its waiter (Snakemake killed, a login session dropped): a later ``f2d2 submit`` with the
same ``log_dir`` first waits for the job that ``job.json`` names while SLURM still runs it (and for its waiter,
when that still runs here), so two jobs never work in one folder at once; then it submits its own, which resumes
from what the first one left. A job that SLURM requeues after its node failed is waited for again.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import datetime
from pathlib import Path
from typing import Any

from f2d2.cli.dispatch import run_command
from f2d2.cli.parser import COMMANDS, build_parser
from f2d2.config.resources import CLUSTERS, Resources
from f2d2.io.atomic import atomic_write_text
from f2d2.training.preemption import STOP_SIGNALS

# How often a job may be cut off by its time limit and requeued (submitit's default, 3, ends long
# trainings on short partitions too early); preemptions do not count.
MAX_TIME_LIMIT_REQUEUES = 50
TAIL_LINES = 30
# How often a local job's results are looked for (submitit's own wait sleeps 1 s, as long as a small job runs).
LOCAL_POLL_S = 0.05
# How often SLURM is asked whether a job left by an earlier waiter, or requeued after a node failure, still runs.
SLURM_POLL_S = 2.0
# How long a previous waiter on this host gets to record its job's end once the job has left SLURM's queue
# (submitit looks for the result every second and asks sacct at least once a minute).
PREVIOUS_WAITER_S = 90.0


class LaunchError(RuntimeError):
    """The job ran (or was submitted) and failed; the message carries its id, command, error tail and logs."""


class CliJob:
    """What a job executes: ``f2d2.cli.main(argv)``; a non-zero exit code becomes a RuntimeError.

    Checkpointable for submitit: on preemption or ahead of the time limit submitit calls
    :meth:`checkpoint` and requeues the job, which then runs the same command again (training resumes
    from its own checkpoint, saved on the signal: :mod:`f2d2.training.preemption`). With several tasks it
    exports the torch.distributed variables first (:mod:`f2d2.training.distributed`).
    """

    def __call__(self, argv: list[str]) -> int:
        job = _job_environment()
        if job is not None and job.num_tasks > 1:  # torch.distributed's variables, from submitit's
            _submitit().helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        try:  # usage errors; submitit would otherwise record no result at all
            build_parser().parse_args(list(argv))
        except SystemExit as e:
            raise RuntimeError(f"f2d2 {' '.join(argv)}: invalid command (exit code {e.code})") from None
        code = run_command(list(argv))  # a SystemExit from here on is submitit's requeue: let it through
        if job is not None:
            _ignore_stop_signals()
        if code != 0:
            raise RuntimeError(f"f2d2 {' '.join(argv)} exited with code {code}")
        return code

    def checkpoint(self, argv: list[str]) -> Any:
        return _submitit().helpers.DelayedSubmission(CliJob(), argv)


def _ignore_stop_signals() -> None:
    """The work is done: a stop signal from now on (SLURM's time-limit warning, a late scancel) must not
    requeue the job, nor kill it while Python shuts down (which restores default handlers, except for
    ignored signals), which SLURM would record as FAILED."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _job_environment() -> Any:
    """submitit's JobEnvironment inside a submitit job, else None (an inline run)."""
    try:
        return _submitit().JobEnvironment()
    except RuntimeError:
        return None


def _submitit() -> Any:
    """The submitit module, imported on first use (a third of a second), so that importing this module
    (``f2d2 --help``, the parser, ``f2d2.cli.main``) does not load it."""
    import submitit

    return submitit


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _check_argv(argv: list[str]) -> list[str]:
    """Parse the command here, so that a usage error fails now rather than after waiting in a queue."""
    argv = list(argv)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"the command to run must be a non-empty list of strings, got {argv!r}")
    if argv[0] not in COMMANDS:
        raise ValueError(
            f"the command to run must start with an f2d2 subcommand ({', '.join(COMMANDS)}), got {argv[0]!r}"
        )
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code:
            usage_error = err.getvalue().strip().splitlines()
            raise ValueError(
                f"invalid command 'f2d2 {' '.join(argv)}': {usage_error[-1] if usage_error else 'argparse rejected it'}"
            ) from None
        raise ValueError(f"'f2d2 {' '.join(argv)}' only prints help; there is nothing to run") from None
    return argv


def _tail(path: Path | None, n: int = TAIL_LINES) -> str:
    """The last ``n`` lines of a text file ('' if it cannot be read)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


_START_LINE = re.compile(r"submitit INFO \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\) - Starting with")


def _started_from_log(stdout: Path) -> str | None:
    """When the job started, from submitit's 'Starting with JobEnvironment' log line (in the job's local time)."""
    try:
        with open(stdout, encoding="utf-8", errors="replace") as f:
            for _, line in zip(range(50), f):
                m = _START_LINE.search(line)
                if m:
                    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").astimezone().isoformat()
    except OSError:
        pass
    return None


@contextmanager
def _interruptible() -> Iterator[None]:
    """While submitting and waiting, let SIGTERM (e.g. Snakemake stopping) and SIGINT reach us, so the job is
    cancelled rather than left running.

    SIGTERM becomes SystemExit. An ignored SIGINT (what a shell gives a background command) is restored to
    KeyboardInterrupt: the local executor cancels with SIGINT, and its processes inherit an ignored one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int == signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous_int)


def _cancel(job: Any) -> None:
    """Cancel a submitit job; for a local one, also wait (briefly) for its controller to stop its tasks."""
    job.cancel(check=False)
    process = getattr(job, "_process", None)  # LocalJob's controller (kills its tasks on SIGINT)
    if process is not None:
        try:
            process.wait(timeout=10)
        except Exception:
            process.kill()


def _slurm_live_state(job_id: str) -> str | None:
    """The job's state while SLURM still has it queued or running (``squeue``: PENDING, RUNNING, COMPLETING, ...);
    None once it has ended, or if SLURM cannot be asked (the submission that follows then says why)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = out.stdout.split() if out.returncode == 0 else []
    return states[0] if states else None


def _wait_while_live(job_id: str) -> None:
    while _slurm_live_state(job_id) is not None:
        time.sleep(SLURM_POLL_S)


def _alive_here(waiter: Any) -> bool:
    """Whether ``waiter`` ({"host", "pid"} from a job.json) is a running process on this host, not this one."""
    if not isinstance(waiter, dict) or waiter.get("host") != socket.gethostname():
        return False
    pid = waiter.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # PermissionError: it runs, as another user
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _wait_for_previous_job(log_dir: Path) -> None:
    """If ``log_dir/job.json`` names a SLURM job that SLURM still runs (its waiter was killed, or still waits),
    wait for it to end, and for its waiter on this host to record that, before a new job is submitted."""
    try:
        previous = json.loads((log_dir / "job.json").read_text())
    except (OSError, ValueError):
        return
    if not isinstance(previous, dict) or previous.get("cluster") != "slurm" or not previous.get("job_id"):
        return
    job_id = str(previous["job_id"])
    state = _slurm_live_state(job_id)
    if state is not None:
        print(
            f"f2d2 submit: SLURM job {job_id} from an earlier submission in {log_dir} is still {state}; "
            "waiting for it to end before submitting (the new job resumes from what it leaves)",
            file=sys.stderr,
            flush=True,
        )
        _wait_while_live(job_id)
    if previous.get("finished") is not None:  # its waiter has recorded the end already
        return
    deadline = time.monotonic() + PREVIOUS_WAITER_S
    while _alive_here(previous.get("waiter")) and time.monotonic() < deadline:
        time.sleep(SLURM_POLL_S / 4)


def _slurm_results(job: Any) -> None:
    """``job.results()``, waiting again while SLURM runs the job once more after submitit saw it end: a job
    requeued after its node failed is NODE_FAIL in accounting for a moment, which submitit takes as its end."""
    uncompleted = _submitit().core.utils.UncompletedJobError
    while True:
        try:
            job.results()
            return
        except uncompleted:
            state = _slurm_live_state(str(job.job_id))
            if state is None:
                raise
            print(
                f"f2d2 submit: SLURM job {job.job_id} is {state} again (requeued after its node failed?); waiting",
                file=sys.stderr,
                flush=True,
            )
            _wait_while_live(str(job.job_id))
            job.watcher.clear()  # submitit caches the end it saw


class _WaitCost:
    """Wall and CPU seconds spent inside the ``with`` block by this process and, with ``children``, the processes
    it ran (submitit's squeue/sacct calls on SLURM; a local job's own processes are children too, so they are
    left out there): a waiter that sleeps uses a small share of the wait in CPU, one that spins all of it."""

    def __init__(self, children: bool) -> None:
        self.children = children

    def __enter__(self) -> _WaitCost:
        self._wall, self._cpu = time.perf_counter(), self._cpu_now()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = self._cpu_now() - self._cpu

    def _cpu_now(self) -> float:
        usages = [resource.getrusage(resource.RUSAGE_SELF)]
        if self.children:
            usages.append(resource.getrusage(resource.RUSAGE_CHILDREN))
        return sum(u.ru_utime + u.ru_stime for u in usages)


def _local_succeeded(job: Any) -> bool:
    """Wait for a local job's result files or its end; True if every task recorded success.

    A task's result file is written (atomically) when its command has returned, about a second before the
    task's and its controller's processes have exited, which submitit's own wait waits for; they end alone.
    """
    results = [job.task(k).paths.result_pickle for k in range(job.num_tasks)]
    while not all(p.exists() for p in results) and not job.done():
        time.sleep(LOCAL_POLL_S)
    if not all(p.exists() for p in results):
        return False
    return all(_submitit().core.utils.pickle_load(p)[0] == "success" for p in results)


def _executor_parameters(cluster: str, resources: Resources, job_name: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": job_name,
        "timeout_min": int(resources.time_min),
        "gpus_per_node": int(resources.gpus),
        "cpus_per_task": int(resources.cpus),
        "mem_gb": float(resources.mem_gb),
        "tasks_per_node": int(resources.tasks_per_node),
    }
    if cluster == "slurm":
        params["slurm_signal_delay_s"] = int(resources.signal_delay_s)
        if resources.partition is not None:
            params["slurm_partition"] = resources.partition
    return params


def submit(argv: list[str], *, cluster: str, log_dir: Path, resources: Resources, job_name: str = "f2d2") -> None:
    """Run ``f2d2 <argv>`` on ``cluster`` and wait for it; record it in ``log_dir/job.json``.

    ``cluster``: "inline" (in this process, no submitit), "local" (a submitit subprocess on this machine) or
    "slurm". Raises ValueError for bad arguments and LaunchError if the job fails.
    """
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster {cluster!r} is not one of {', '.join(CLUSTERS)}")
    if not isinstance(resources, Resources):
        raise ValueError(f"resources must be a Resources, got {type(resources).__name__}")
    argv = _check_argv(argv)
    log_dir = Path(log_dir).expanduser().absolute()
    log_dir.mkdir(parents=True, exist_ok=True)
    command = "f2d2 " + " ".join(argv)
    record: dict[str, Any] = {
        "job_id": None,
        "cluster": cluster,
        "job_name": job_name,
        "argv": argv,
        "cwd": os.getcwd(),
        "log_dir": str(log_dir),
        "resources": dataclasses.asdict(resources),
        "submitted": _now(),
        "started": None,
        "finished": None,
        "state": "SUBMITTED",
        "stdout": None,
        "stderr": None,
        "wall_seconds": None,
        "waiter": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    clock = time.perf_counter()

    def write(state: str | None = None) -> None:
        if state is not None:
            record["state"] = state
            record["finished"] = _now()
            record["wall_seconds"] = round(time.perf_counter() - clock, 3)
        atomic_write_text(log_dir / "job.json", json.dumps(record, indent=1) + "\n")

    if cluster == "inline":
        _submit_inline(argv, command, record, write)
    else:
        with _interruptible():
            _submit_and_wait(argv, command, cluster, log_dir, resources, job_name, record, write)


def _failure_message(record: dict[str, Any], command: str, reason: str, tail: str, tail_of: str) -> str:
    lines = [f"job {record['job_id']} on cluster {record['cluster']!r} failed: {command}"]
    if reason:
        lines.append(reason)
    lines += [
        f"--- last lines of {tail_of} ---",
        tail or "(empty)",
        "---",
        f"stdout log: {record['stdout']}",
        f"stderr log: {record['stderr']}",
        f"job record: {record['log_dir']}/job.json",
    ]
    return "\n".join(lines)


def _submit_inline(argv: list[str], command: str, record: dict[str, Any], write: Any) -> None:
    record.update(
        job_id=f"inline-{os.getpid()}",
        stdout="(this process's stdout)",
        stderr="(this process's stderr)",
        state="RUNNING",
        started=_now(),
    )
    write()
    try:
        CliJob()(argv)
    except Exception as e:
        write("FAILED")
        tail = "\n".join(traceback.format_exc().rstrip("\n").splitlines()[-TAIL_LINES:])
        raise LaunchError(_failure_message(record, command, "", tail, "the traceback")) from e
    except BaseException:
        write("CANCELLED")
        raise
    write("COMPLETED")


def _submit_and_wait(
    argv: list[str],
    command: str,
    cluster: str,
    log_dir: Path,
    resources: Resources,
    job_name: str,
    record: dict[str, Any],
    write: Any,
) -> None:
    submitit = _submitit()
    if cluster == "slurm":
        _wait_for_previous_job(log_dir)
    try:  # no SLURM here ("Could not detect srun"), sbatch refused it (bad partition, ...)
        executor = submitit.AutoExecutor(folder=log_dir, cluster=cluster, slurm_max_num_timeout=MAX_TIME_LIMIT_REQUEUES)
        executor.update_parameters(**_executor_parameters(cluster, resources, job_name))
        job = executor.submit(CliJob(), argv)
    except Exception as e:
        write("FAILED")
        raise LaunchError(
            f"could not submit {command} to cluster {cluster!r}: {e} (job record: {log_dir / 'job.json'})"
        ) from e
    record.update(job_id=str(job.job_id), stdout=str(job.paths.stdout), stderr=str(job.paths.stderr))
    write()
    waited = _WaitCost(children=cluster != "local")
    try:
        with waited:
            if cluster == "slurm":
                _slurm_results(job)
            elif not _local_succeeded(job):
                job.results()  # waits, polling with sleeps; one result per task
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C / SIGTERM while waiting: do not leave the job running
        try:
            _cancel(job)
        finally:
            record["started"] = _started_from_log(job.paths.stdout)
            write("CANCELLED")
        raise
    except Exception as e:  # FailedJobError (it raised), UncompletedJobError (timed out, killed, ...)
        record["started"] = _started_from_log(job.paths.stdout)
        failed, error = job, e
        for k in range(job.num_tasks):  # point at the first task that failed
            try:
                task_error = job.task(k).exception()
            except Exception as task_e:  # pragma: no cover - submitit internals
                task_error = task_e
            if task_error is not None:
                failed, error = job.task(k), task_error
                break
        record.update(stdout=str(failed.paths.stdout), stderr=str(failed.paths.stderr))
        write("FAILED")
        tail, tail_of = _tail(failed.paths.stderr), str(failed.paths.stderr)
        if not tail:
            tail, tail_of = "\n".join(str(error).splitlines()[-TAIL_LINES:]), "submitit's error"
        failed_itself = isinstance(error, submitit.core.utils.FailedJobError)
        reason = "" if failed_itself else "\n".join(str(error).splitlines()[:2])
        raise LaunchError(_failure_message(record, command, reason, tail, tail_of)) from e
    record["started"] = _started_from_log(job.paths.stdout)
    record.update(wait_seconds=round(waited.seconds, 3), wait_cpu_seconds=round(waited.cpu_seconds, 3))
    write("COMPLETED")
