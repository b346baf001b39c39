"""The fault table: each fault a SLURM or laptop user meets, tried with several seeds on real processes and files,
one row per fault: tries, survived (the run ends in the state of a run that never met the fault), data lost
(a finished checkpoint that could not be loaded afterwards: must be 0) and the seconds the recovery took. Not a
test (tests/test_faults.py, test_disk_full.py and test_lock.py are); it prints numbers.

    python bench/faults.py --tries 5 [--out faults.json]

Faults: ``sigkill`` (a training process killed at a seeded random step, then rerun), ``disk-full`` (the disk fills
before a seeded checkpoint; needs root, it mounts a 4 MiB tmpfs; the rerun after freeing space), ``busy-folder``
(a second training started in the folder of a running one: refused naming the first, which goes on). On the SLURM
cluster that $SLURM_CONF names (``bash scripts/slurm.sh up``; ``eval "$(bash scripts/slurm.sh env)"``):
``node-failure`` (slurmd and the job's processes SIGKILLed at a seeded step of a SLURM training job,
``scripts/slurm.sh fail-node``, slurmd back once the node is marked down; the job is requeued, or fails and is
submitted again) and ``waiter-killed`` (the ``f2d2 submit`` waiting on a training job, what Snakemake runs for each
job, SIGKILLed at a seeded step; a second submission in the same folder waits for the first job to end, then
resumes: survived when SLURM's accounting shows the two jobs never overlapped).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from f2d2.io.atomic import atomic_write_text
from f2d2.io.checkpoint import load_checkpoint

RUN = {
    "seed": 11,
    "data": {"name": "checkerboard"},
    "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2},
    "train": {"steps": 200, "batch_size": 64, "lr": 1e-3, "warmup": 5, "log_every": 1, "ckpt_every": 10},
}
F2D2 = [sys.executable, "-m", "f2d2.cli.main"]
ROOT = Path(__file__).resolve().parents[1]
# The SLURM faults' run: long enough that a job is mid-training after SLURM has started it.
SLURM_RUN = {**RUN, "train": {**RUN["train"], "steps": 2000, "log_every": 10, "ckpt_every": 100}}


def train_cmd(config: Path, workdir: Path, *extra: str) -> list[str]:
    return [*F2D2, "train", "--config", str(config), "--workdir", str(workdir), "--no-progress", *extra]


def same(a: Path, b: Path) -> bool:
    """Both checkpoints hold the same step, model and EMA weights."""
    x, y = load_checkpoint(a), load_checkpoint(b)
    return x["step"] == y["step"] and all(
        torch.equal(x[part][k], y[part][k]) for part in ("model", "ema") for k in x[part]
    )


def logged_step(workdir: Path) -> int:
    try:
        lines = (workdir / "metrics.jsonl").read_text().split("\n")[:-1]
    except FileNotFoundError:
        return 0
    return json.loads(lines[-1])["step"] if lines else 0


def sigkill(config: Path, ref: Path, work: Path, rng: random.Random) -> tuple[bool, int, float]:
    target = rng.randrange(15, RUN["train"]["steps"] - 15)
    proc = subprocess.Popen(train_cmd(config, work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and logged_step(work) < target:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lost = 0
    if (work / "checkpoint.pt").exists():
        try:
            load_checkpoint(work / "checkpoint.pt")
        except Exception:  # a checkpoint that cannot be read after the kill is data lost (prev would be used)
            lost = 1
    start = time.perf_counter()
    ok = subprocess.run(train_cmd(config, work), capture_output=True).returncode == 0
    return ok and same(work / "checkpoint.pt", ref), lost, time.perf_counter() - start


def disk_full(config: Path, ref: Path, work: Path, rng: random.Random) -> tuple[bool, int, float]:
    disk = work.parent / f"{work.name}-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode:
        raise SystemExit("disk-full needs root (it mounts a tmpfs); run the other faults with --faults")
    try:
        run = disk / "run"
        stop = rng.randrange(1, RUN["train"]["steps"] // 10) * 10  # fills up after this checkpoint
        assert (
            subprocess.run(train_cmd(config, run, "--set", f"train.steps={stop}"), capture_output=True).returncode == 0
        )
        kept = load_checkpoint(run / "checkpoint.pt")["step"]
        filler = disk / "filler"
        filler.write_bytes(b"\0" * max(0, shutil.disk_usage(disk).free - rng.randrange(1, 50_000)))
        failed = subprocess.run(train_cmd(config, run), capture_output=True, text=True)
        said_full = failed.returncode == 2 and "the disk is full" in failed.stderr
        lost = int(load_checkpoint(run / "checkpoint.pt")["step"] != kept)
        filler.unlink()
        start = time.perf_counter()
        ok = subprocess.run(train_cmd(config, run), capture_output=True).returncode == 0
        return said_full and ok and same(run / "checkpoint.pt", ref), lost, time.perf_counter() - start
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def busy_folder(config: Path, ref: Path, work: Path, rng: random.Random) -> tuple[bool, int, float]:
    """A long first training; a second in its folder once the first has logged a seeded step: survived when the
    second is refused naming the first's pid while the first goes on; seconds: how long the refusal took."""
    long = work.parent / f"{work.name}.yaml"
    long.write_text(yaml.safe_dump({**RUN, "train": {**RUN["train"], "steps": 1_000_000}}))
    first = subprocess.Popen(train_cmd(long, work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = rng.randrange(1, 50)
        while first.poll() is None and logged_step(work) < target:
            time.sleep(0.002)
        start = time.perf_counter()
        second = subprocess.run(train_cmd(long, work), capture_output=True, text=True)
        seconds = time.perf_counter() - start
        refused = (
            second.returncode == 2 and f"is being trained by a process outside SLURM (pid {first.pid}" in second.stderr
        )
        going_on = first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    return refused and going_on, checkpoint_lost(work), seconds


def submit_cmd(config: Path, work: Path) -> list[str]:
    return [*F2D2, "submit", "--cluster", "slurm", "--log-dir", str(work / "logs"), "--job-name", f"fault-{work.name}",
            "--", "train", "--config", str(config), "--workdir", str(work), "--no-progress"]  # fmt: skip


def slurm_sh(command: str) -> str:
    """`bash scripts/slurm.sh <command>` on the cluster that $SLURM_CONF names; what it said."""
    env = {**os.environ, "F2D2_SLURM_DIR": str(Path(os.environ["SLURM_CONF"]).parent)}
    script = ["bash", str(ROOT / "scripts" / "slurm.sh"), command]
    return subprocess.run(script, env=env, check=True, capture_output=True, text=True).stderr


def node_state() -> str:
    """The test cluster's one node's state as sinfo abbreviates it (idle, mix, down*, ...)."""
    return subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip()


def submitted_job_ids(log_dir: Path) -> list[str]:
    """Every SLURM job submitted from ``log_dir`` (submitit leaves <id>_submission.sh for each), oldest first."""
    return sorted({p.name.split("_")[0] for p in log_dir.glob("*_submission.sh")}, key=int)


def wait_until(condition, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {limit:.0f} s (node state {node_state()!r})")
        time.sleep(0.1)


def slurm_states(work: Path) -> list[tuple[str, float, float]]:
    """(state, start, end) of every attempt of every job submitted from ``work/logs``, once all have ended."""
    ids = submitted_job_ids(work / "logs")
    fmt = ["State", "Start", "End"]
    while True:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", ",".join(ids), "-o", ",".join(fmt)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        rows = [line.split("|") for line in out.splitlines() if line]
        if rows and all(r[2] != "Unknown" for r in rows):
            stamp = lambda t: time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%S"))  # noqa: E731
            return [(r[0].split()[0], stamp(r[1]), stamp(r[2])) for r in rows]
        time.sleep(0.5)


def checkpoint_lost(work: Path) -> int:
    try:
        load_checkpoint(work / "checkpoint.pt")
    except Exception:
        return 1
    return 0


def node_failure(config: Path, ref: Path, work: Path, rng: random.Random) -> tuple[bool, int, float]:
    """Survived when the run ends as the uninterrupted one and resumed from a checkpoint (not from scratch);
    seconds: from the failure to the end of the run."""
    target = rng.randrange(200, SLURM_RUN["train"]["steps"] - 300)
    waiter = subprocess.Popen(submit_cmd(config, work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: logged_step(work) >= target or waiter.poll() is not None)
    start = time.perf_counter()
    slurm_sh("fail-node")
    try:
        wait_until(lambda: node_state().startswith("down"))
    finally:
        slurm_sh("start-node")
    ok = waiter.wait() == 0 or subprocess.run(submit_cmd(config, work), capture_output=True).returncode == 0
    seconds = time.perf_counter() - start
    logs = "".join(p.read_text(errors="replace") for p in (work / "logs").glob("*_log.out"))
    states = [s for s, _, _ in slurm_states(work)]
    resumed = "resuming from" in logs and states[0] == "NODE_FAIL"
    return ok and resumed and same(work / "checkpoint.pt", ref), checkpoint_lost(work), seconds


def waiter_killed(config: Path, ref: Path, work: Path, rng: random.Random) -> tuple[bool, int, float]:
    """Survived when the second submission ends the run as the uninterrupted one and no two jobs of the folder
    overlapped in SLURM's accounting; seconds: from the kill to the end of the second submission."""
    target = rng.randrange(200, SLURM_RUN["train"]["steps"] - 300)
    waiter = subprocess.Popen(submit_cmd(config, work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: logged_step(work) >= target or waiter.poll() is not None)
    start = time.perf_counter()
    waiter.send_signal(signal.SIGKILL)
    waiter.wait()
    ok = subprocess.run(submit_cmd(config, work), capture_output=True).returncode == 0
    seconds = time.perf_counter() - start
    attempts = slurm_states(work)
    apart = all(a[2] <= b[1] for a, b in zip(attempts, attempts[1:]))
    return ok and apart and same(work / "checkpoint.pt", ref), checkpoint_lost(work), seconds


FAULTS = {
    "sigkill": sigkill,
    "disk-full": disk_full,
    "busy-folder": busy_folder,
    "node-failure": node_failure,
    "waiter-killed": waiter_killed,
}
SLURM_FAULTS = {"node-failure", "waiter-killed"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=5, help="seeds per fault")
    p.add_argument("--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    slurm = sorted(SLURM_FAULTS & set(args.faults))
    if slurm and not os.environ.get("SLURM_CONF"):
        p.error(
            f"{', '.join(slurm)} need a SLURM cluster and $SLURM_CONF is unset: `bash scripts/slurm.sh up` and "
            '`eval "$(bash scripts/slurm.sh env)"` first, or choose --faults sigkill disk-full busy-folder'
        )
    rows = []
    # SLURM jobs read the runs: on the shared file system, not in a node-local /tmp
    scratch = Path("results", "bench").absolute()
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="faults-") as tmp:
        tmp = Path(tmp)
        runs = {}
        for name, run in (("run", RUN), ("slurm-run", SLURM_RUN)):
            if name == "run" or slurm:
                runs[name] = tmp / f"{name}.yaml"
                runs[name].write_text(yaml.safe_dump(run))
                done = subprocess.run(train_cmd(runs[name], tmp / f"{name}-ref"), capture_output=True)
                assert done.returncode == 0, done.stderr
        for name in args.faults:
            run = "slurm-run" if name in SLURM_FAULTS else "run"
            ref = tmp / f"{run}-ref" / "checkpoint.pt"
            results = [
                FAULTS[name](runs[run], ref, tmp / f"{name}-{seed}", random.Random(seed)) for seed in range(args.tries)
            ]
            rows.append(
                {
                    "fault": name,
                    "tries": len(results),
                    "survived": sum(ok for ok, _, _ in results),
                    "data_lost": sum(lost for _, lost, _ in results),
                    "recover_seconds": round(sum(s for _, _, s in results) / len(results), 2),
                }
            )
            print(f"[faults] {rows[-1]}", file=sys.stderr)
    print(f"{'fault':14s} {'tries':>5s} {'survived':>8s} {'data lost':>9s} {'recovery s':>10s}")
    for r in rows:
        print(f"{r['fault']:14s} {r['tries']:5d} {r['survived']:8d} {r['data_lost']:9d} {r['recover_seconds']:10.2f}")
    if args.out is not None:
        record = {"command": " ".join(sys.argv), "run": RUN, "slurm_run": SLURM_RUN, "rows": rows}
        atomic_write_text(args.out, json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
