"""bench/images.py at its CPU size: every row of the table is there with positive numbers (no timing thresholds:
nothing here depends on the machine's speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline_helpers import ROOT, load_bench


@pytest.mark.slow
def test_cpu_benchmark_has_every_row(tmp_path, capsys):
    bench = load_bench("images")
    out = tmp_path / "images.json"
    assert (
        bench.main(
            [
                "--size",
                "cpu",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--iters",
                "1",
                "--bpd-n",
                "64",
                "--ref-n",
                "2",
                "--sample-batch",
                "16",
                "--sample-reps",
                "1",
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    rows = {(r["kind"], r["mode"]): r for r in res["train"]}
    assert set(rows) == {(k, m) for k in bench.KINDS for m in bench.MODES}
    for (_, mode), row in rows.items():
        if mode == "compile":  # a compile takes minutes on a CPU: the CPU size skips it unless asked
            assert row["skipped"]
        else:
            assert row["images_per_s"] > 0 and row["warmup_s"] > 0, row
    assert {(r["nfe"], r["precision"]) for r in res["sampling"]} == {
        (k, p) for k in (1, 2, 4, 8) for p in ("float32", "bfloat16")
    }
    assert all(r["ms_per_image"] > 0 for r in res["sampling"])
    bpd = res["bpd"]
    assert bpd["n"] == 64 and bpd["ref_n"] == 2 and bpd["ref_nfe"] > 0
    assert all(bpd[k] > 0 for k in ("k1_s", "k1_bpd", "ref_s_measured", "ref_s_extrapolated", "ref_bpd", "speedup"))
    table = capsys.readouterr().out
    assert all(k in table for k in bench.KINDS) and "sampling ms/image" in table and "K = 1 BPD of 64" in table


def test_stage_overrides_pick_shared_and_own():
    bench = load_bench("images")
    items = ["train.device=cpu", "teacher:train.steps=4", "shortcut_distill:train.steps=2", "model.x=[1, 2]"]
    assert bench.stage_overrides(items, "teacher") == ["train.device=cpu", "train.steps=4", "model.x=[1, 2]"]


@pytest.mark.slow
def test_gpu_check_runs_its_three_parts_end_to_end_at_cpu_size(tmp_path):
    """bench/gpu_check.sh --tiny: the GPU check's wiring (bench, calibration, the frontier on the calibrated
    checkpoints) on a CPU, so that a GPU lease is not spent on a broken script. Generous limits: no speed test."""
    out = tmp_path / "gpu_check"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    env.update(LIMIT_BENCH="3600", LIMIT_CAL="3600", LIMIT_FRONTIER="3600")
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--tiny"], env=env, capture_output=True, text=True, cwd=ROOT
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    for part in ("bench", "calibrate", "frontier"):
        assert f"== {part}: exit 0" in log, log[-3000:]
    bench = load_bench("images")
    res = json.loads((out / "images.json").read_text())
    assert {r["kind"] for r in res["train"]} == set(bench.KINDS)
    cal = json.loads((out / "calibrate" / "calibrate.json").read_text())
    assert cal["stages"] == list(bench.CALIBRATE_STAGES) and cal["ref_nfe"] > 0 and cal["k1_s"] > 0
    front = json.loads((out / "frontier" / "frontier.json").read_text())
    names = {r["name"] for r in front["rows"]}
    assert {f"shortcut_distill_f2d2 K={k} head" for k in (1, 2, 4, 8)} <= names
    assert {"teacher euler 1 hutchinson", "teacher euler 1 hutchinson (flow_matching)"} <= names
    assert all(r["seconds"] > 0 and r["error_nats"] >= 0 for r in front["rows"])
    for stage in bench.CALIBRATE_STAGES:  # the training curves are kept, the checkpoints removed
        assert (out / f"{stage}.metrics.jsonl").read_text().strip()
        assert not list((out / "calibrate" / stage).glob("checkpoint*.pt"))
