"""Shared fixtures. Tests marked ``slurm`` need the cluster that ``scripts/test.sh`` brings up; run
without it they fail (never skip) and say how to get one or how to deselect them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from pipeline_helpers import snakemake, tiny_config


def _slurm_problem() -> str | None:
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is not set"
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH"
    state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if (
        state.returncode != 0
        or "idle" not in state.stdout
        and "mix" not in state.stdout
        and "alloc" not in state.stdout
    ):
        return f"sinfo reports no usable node: {state.stdout.strip() or state.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The partition of the running test cluster; fails (not skips) when there is none."""
    problem = _slurm_problem()
    if problem:
        pytest.fail(
            f"this test needs a SLURM cluster ({problem}): run the suite with `bash scripts/test.sh`, "
            "which starts one (scripts/slurm.sh up), or deselect with -m 'not slurm'",
            pytrace=False,
        )
    return os.environ.get("F2D2_PARTITION", "f2d2")


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """The whole pipeline on the tiny config with the local profile: (tmp, config, outdir)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    config = tiny_config(tmp)
    snakemake(tmp, config)
    return tmp, config, tmp / "results"
