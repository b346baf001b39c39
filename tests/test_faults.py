"""Fault injection: training killed with SIGKILL at seeded random points and restarted ends exactly like an
uninterrupted run; a Snakemake run interrupted with SIGINT and rerun keeps the jobs it had finished."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from f2d2.io.checkpoint import load_checkpoint
from pipeline_helpers import snakemake, snakemake_cmd, tiny_config

KILLS = 20
STEPS = 300
RUN = {
    "seed": 5,
    "data": {"name": "checkerboard"},
    "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2},
    "train": {
        "steps": STEPS,
        "batch_size": 64,
        "lr": 1e-3,
        "warmup": 10,
        "ema_decay": 0.99,
        "log_every": 1,
        "ckpt_every": 5,
    },
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# Starts `f2d2 train` runs as forked children of one process that has already imported torch and f2d2, so
# that each restart costs milliseconds instead of an interpreter start-up. The child runs the CLI's `main`
# exactly as `f2d2 train` does; the test SIGKILLs the child. Protocol: a line of CLI arguments in ->
# "pid <pid>" out; when that child has ended, "exit <status>" out.
FORK_SERVER = """
import os, sys
import torch._dynamo  # noqa: F401  (imported by the first optimizer; seconds)
from f2d2.cli import commands, main  # noqa: F401  (the imports the children share)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os._exit(main(line.split()))
    print("pid", pid, flush=True)
    print("exit", os.waitpid(pid, 0)[1], flush=True)
"""


class Trainer:
    """`f2d2 train` runs started through FORK_SERVER, one at a time."""

    def __init__(self, config: Path, stderr: Path):
        self.config = config
        self.server = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            env=ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr.open("w"),
            text=True,
        )

    def start(self, workdir: Path) -> int:
        self.server.stdin.write(f"train --config {self.config} --workdir {workdir} --no-progress\n")
        self.server.stdin.flush()
        return int(self.server.stdout.readline().split()[1])

    def wait(self) -> int:
        """The exit status of the last child (os.waitpid's)."""
        return int(self.server.stdout.readline().split()[1])

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
    trainer = Trainer(config, tmp_path / "stderr.txt")
    trainer.start(tmp_path / "full")
    assert trainer.wait() == 0, (tmp_path / "stderr.txt").read_text()

    work = tmp_path / "killed"
    rng = random.Random(2024)
    targets = sorted(rng.sample(range(2, STEPS - 2), KILLS))
    landed = []  # (step resumed from, step logged when killed) for kills that hit a training process mid-run
    in_save = 0  # kills that left a half-written checkpoint behind
    for target in targets:
        target = max(target, _logged_step(work) + 1)  # old log lines past the checkpoint are not progress
        resumed_from = load_checkpoint(work / "checkpoint.pt")["step"] if (work / "checkpoint.pt").exists() else 0
        pid = trainer.start(work)
        while _alive(pid) and _logged_step(work) < target:
            time.sleep(rng.uniform(0, 0.004))
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            landed.append((resumed_from, _logged_step(work)))
        trainer.wait()
        in_save += any(p.name.startswith(".checkpoint.pt.") for p in work.iterdir())
    trainer.start(work)
    assert trainer.wait() == 0, (tmp_path / "stderr.txt").read_text()
    trainer.close()

    print(
        f"\nkills that landed mid-training (resumed from step, logged step at the kill): {landed}; "
        f"{in_save} of them while a checkpoint was being written"
    )
    # A kill can miss only if a slow poll let the run finish first; at least 10 must land mid-training.
    assert len(landed) >= 10 and all(a < b <= STEPS for a, b in landed)
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(work / "checkpoint.pt")
    assert a["step"] == b["step"] == STEPS
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert _log(tmp_path / "full") == _log(work)
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []  # no temporaries left behind


def _finished_outputs(log: str) -> set[str]:
    """Outputs of the jobs a Snakemake log reports as finished."""
    outputs, job = {}, None
    for line in log.splitlines():
        if m := re.match(r"\s+output: (.*)", line):
            job = [o.strip() for o in m.group(1).split(",")]
        elif (m := re.match(r"\s+jobid: (\d+)", line)) and job is not None:
            outputs[m.group(1)], job = job, None
    done = re.findall(r"Finished job(?:id)?:? (\d+)", log)
    return {o for j in done for o in outputs.get(j, [])}


# Put on Snakemake's PYTHONPATH as sitecustomize.py with $F2D2_TEST_HOLD naming a folder and
# $F2D2_TEST_CELLS the cells' paths: the first `f2d2 submit` that writes one of the cells runs as usual,
# the second writes <folder>/held and waits there until it is interrupted. So the second cell is always
# running when the test's Ctrl-C arrives, however fast or loaded the machine.
HOLD_SECOND_CELL = """
import os
import sys
import time
from pathlib import Path

hold, cells = os.environ.get("F2D2_TEST_HOLD"), os.environ.get("F2D2_TEST_CELLS", "").split(os.pathsep)
if hold and sys.argv[1:2] == ["submit"] and set(cells) & set(sys.argv):
    try:
        os.close(os.open(Path(hold, "first"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        Path(hold, "held").write_text(" ".join(sys.argv))
        time.sleep(600)
"""


def _interrupt_after_first_cell(work: Path, cells: list[Path]) -> tuple[Path, str]:
    """Run Snakemake in ``work`` for ``cells`` (paths relative to it), each its own job (eval.bundle: false),
    and Ctrl-C it once the first has finished and the second is held running (HOLD_SECOND_CELL); return
    (config, log).

    Snakemake starts with SIGINT at its default: a shell without job control starts background commands
    (`bash scripts/test.sh &`) with SIGINT ignored, which every child inherits, Python included.
    """
    config = tiny_config(work, bundle=False)
    targets = [str(work / c) for c in cells]
    hook, hold = work / "hook", work / "hold"
    hook.mkdir()
    hold.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_SECOND_CELL)
    cmd, env = snakemake_cmd(work, config, "--cores", "1", *targets)
    path = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        cmd,
        cwd=Path(__file__).resolve().parents[1],
        env={
            **env,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path,
            "F2D2_TEST_HOLD": str(hold),
            "F2D2_TEST_CELLS": os.pathsep.join(targets),
        },
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = []
    for line in proc.stdout:  # until the first evaluation cell has finished
        log.append(line)
        if _finished_outputs("".join(log)) & set(targets):
            break
    deadline = time.monotonic() + 300
    while not (hold / "held").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (hold / "held").exists(), "the second cell never started:\n" + "".join(log)[-3000:]
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group
    log.append(proc.communicate(timeout=120)[0])
    assert proc.returncode != 0, "Snakemake finished before the interrupt landed:\n" + "".join(log)[-3000:]
    return config, "".join(log)


def test_snakemake_interrupted_with_sigint_keeps_finished_jobs(tmp_path):
    relative = [Path("results", "eval", "nll", "teacher", f"K{k}.json") for k in (1, 2)]
    config, log = _interrupt_after_first_cell(tmp_path, relative)
    cells = [tmp_path / c for c in relative]
    finished = {Path(o) for o in _finished_outputs(log)}
    assert len(finished & set(cells)) == 1 and finished > {tmp_path / "results" / "eval" / "test_points.npy"}
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    rerun = snakemake(tmp_path, config, *map(str, cells))
    assert all(c.exists() for c in cells)
    assert [p for p in finished if p.stat().st_mtime_ns != stamps[p]] == [], rerun.stdout[-3000:]
    redone = {Path(o) for o in _finished_outputs(rerun.stdout + rerun.stderr)}
    assert not finished & redone and set(cells) - finished <= redone
    print(f"\nkept after SIGINT: {sorted(p.name for p in finished)}; rerun made: {sorted(p.name for p in redone)}")


WRITER = """
import sys, time
from f2d2.io.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp, open(tmp, "w") as f:
    f.write('{"half": ')
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
    f.write('"done"}')
"""


def test_a_result_file_killed_mid_write_never_looks_done(tmp_path):
    cell = tmp_path / "K1.json"
    cell.write_text('{"old": 1}')
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(cell)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads(cell.read_text()) == {"old": 1}
    (stale,) = [p for p in tmp_path.iterdir() if p != cell]
    assert stale.name.startswith(".K1.json.") and stale.name.endswith(".tmp.json")  # hidden, never the target
