"""The fault table: each fault a SLURM or laptop user meets, tried with several seeds on real processes and files,
one row per fault: tries, survived (the run ends in the state of a run that never met the fault), data lost
(a finished checkpoint that could not be loaded afterwards: must be 0) and the seconds the recovery took. Not a
test (tests/test_faults.py, test_disk_full.py and test_lock.py are); it prints numbers.

    python bench/faults.py --tries 5 [--out faults.json]

Faults: ``sigkill`` (a training process killed at a seeded random step, then rerun), ``disk-full`` (the disk fills
before a seeded checkpoint; needs root, it mounts a 4 MiB tmpfs; the rerun after freeing space), ``busy-folder``
(a second training started in the folder of a running one: refused naming the first, which goes on).
"""

from __future__ import annotations

import argparse
import json
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
    lost = 0
    try:
        load_checkpoint(work / "checkpoint.pt")
    except Exception:
        lost = 1
    return refused and going_on, lost, seconds


FAULTS = {"sigkill": sigkill, "disk-full": disk_full, "busy-folder": busy_folder}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=5, help="seeds per fault")
    p.add_argument("--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = tmp / "run.yaml"
        config.write_text(yaml.safe_dump(RUN))
        assert subprocess.run(train_cmd(config, tmp / "ref"), capture_output=True).returncode == 0
        for name in args.faults:
            results = [
                FAULTS[name](config, tmp / "ref" / "checkpoint.pt", tmp / f"{name}-{seed}", random.Random(seed))
                for seed in range(args.tries)
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
    print(f"{'fault':12s} {'tries':>5s} {'survived':>8s} {'data lost':>9s} {'recovery s':>10s}")
    for r in rows:
        print(f"{r['fault']:12s} {r['tries']:5d} {r['survived']:8d} {r['data_lost']:9d} {r['recover_seconds']:10.2f}")
    if args.out is not None:
        atomic_write_text(args.out, json.dumps({"command": " ".join(sys.argv), "run": RUN, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
