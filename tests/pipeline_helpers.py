"""Running the Snakemake pipeline from tests: a tiny config and a `snakemake` call with a profile
(local unless asked)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from f2d2.cli import main
from f2d2.objectives import Objective

ROOT = Path(__file__).resolve().parents[1]


def load_bench(name: str):
    """The module bench/<name>.py (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def tiny_config(tmp: Path, bundle: bool = True) -> Path:
    """config/config.yaml shrunk to seconds per job, with ``outdir`` under ``tmp``; written to tmp/tiny.yaml.
    ``bundle``: eval.bundle (False: one job per evaluation cell)."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["outdir"] = str(tmp / "results")
    cfg["model"].update(hidden=16, depth=2, time_freqs=2)
    cfg["train"].update(steps=30, batch_size=128, warmup=5, ema_halflife_steps=5, log_every=10, ckpt_every=10)
    for stage in cfg["stages"].values():  # the stages' own budgets give way to the shared one above
        stage.get("train", {}).pop("steps", None)
    cfg["stages"]["teacher"]["train"]["steps"] = 60
    cfg["eval"].update(n_points=200, steps=[1, 2], bundle=bundle)
    cfg["eval"]["frontier"] = {"n": 50, "euler": [1, 2], "midpoint": [1], "rk4": [1], "tols": [1.0e-2]}
    cfg["eval"]["density_grid"]["size"] = 8
    cfg["ablations"]["div_scale"]["values"] = [1.0, 10.0]
    cfg["ablations"]["lam"]["values"] = [0.1, 1.0]
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake_cmd(tmp: Path, config: Path, *args: str, profile: str = "local") -> tuple[list[str], dict]:
    """The command line and environment of a Snakemake run in ``tmp`` with workflow/profiles/<profile>."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        *SNAKEMAKE,
        "--profile",
        str(ROOT / "workflow" / "profiles" / profile),
        "--configfile",
        str(config),
        "--directory",
        str(tmp),
        *args,
    ]
    return cmd, env


def snakemake(
    tmp: Path, config: Path, *args: str, check: bool = True, profile: str = "local"
) -> subprocess.CompletedProcess:
    cmd, env = snakemake_cmd(tmp, config, *args, profile=profile)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def train_default_teacher(workdir: Path, *overrides: str) -> int:
    """`f2d2 train` of the default config's teacher stage into ``workdir`` with ``--set`` overrides; the exit code."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    return main(
        [
            "train",
            "--config",
            str(ROOT / "config" / "config.yaml"),
            "--stage",
            "teacher",
            "--workdir",
            str(workdir),
            *sets,
        ]
    )


class CallingObjective(Objective):
    """An objective that calls ``fn(model, x1, generator)``: a stand-in a test puts in the training loop."""

    TERMS = ("fm",)

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __call__(self, model, x1, generator):
        return self.fn(model, x1, generator)


def assert_same_tables(out: Path, reference_out: Path) -> None:
    """The tables under ``out`` equal those under ``reference_out`` (paths compared relative to each folder);
    Table 4 holds wall-clock times: its layout only."""
    for n in (1, 3, 5, 6, 7):
        mine, ref = (
            pd.read_csv(d / "tables" / f"table{n}.csv")
            .drop(columns=["config"], errors="ignore")
            .replace(re.escape(str(d)), "OUT", regex=True)
            for d in (out, reference_out)
        )
        pd.testing.assert_frame_equal(mine, ref, check_exact=True, obj=f"table{n}")
    t4, ref4 = (pd.read_csv(d / "tables" / "table4.csv") for d in (out, reference_out))
    assert list(t4.columns) == list(ref4.columns) and len(t4) == len(ref4)
