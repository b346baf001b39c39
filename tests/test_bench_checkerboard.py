"""bench/checkerboard.py on a tiny budget: one run prints every method's error at every K (the same numbers
as its JSON) and its endpoint / divergence split, the reference's gap to the analytic NLL, the speed ratio and
each stage's training time."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml

from f2d2.config.resolve import resolve_run
from f2d2.core.likelihood import log_likelihood, reference_log_likelihood
from f2d2.data import make_dataset
from f2d2.io.checkpoint import load_model
from pipeline_helpers import ROOT, load_bench

STAGES = ["teacher", "shortcut_distill", "shortcut_distill_f2d2"]


@pytest.mark.slow
def test_one_run_prints_every_error_the_speed_ratio_and_stage_times(tmp_path, capsys):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["model"].update(hidden=16, depth=2, time_freqs=2, x_freqs=4)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    args = ["--config", str(config), "--out", str(tmp_path / "b"), "--families", "two-way", "--n-points", "64"]
    args += ["--no-progress", "--stages", "shortcut_distill_f2d2", "--set", "train.steps=10", "--set", "train.warmup=2"]
    assert load_bench("checkerboard").main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "b" / "checkerboard.json").read_text())
    assert result["config_content"]["eval"]["guidance"]["lr_one_step"] == cfg["eval"]["guidance"]["lr_one_step"]

    gap = result["reference"]["mean_nll_nats"] - result["analytic_mean_nll_nats"]
    assert f"mean NLL - analytic {gap:.4f}" in printed
    errors, split = printed.split("mean per-point |NLL - reference NLL| (nats)\n", 1)[1].split("error split", 1)
    table = errors.splitlines()
    assert table[0].split()[-4:] == ["K=1", "K=2", "K=4", "K=8"]
    lines = {line.split()[1]: line.split()[-4:] for line in table[1:] if line.startswith("two-way ")}
    assert set(lines) == set(STAGES)
    for row in result["rows"]:
        assert lines[row["method"]][[1, 2, 4, 8].index(row["K"])] == f"{row['abs_err_vs_reference']:.4f}"
    split = split.split("[mean ||x0 - x0_ref||]\n", 1)[1].splitlines()
    cells = {line.split()[1]: re.findall(r"(\d+\.\d{4})/(\d+\.\d{4}) \[(\d+\.\d{3})\]", line) for line in split[1:4]}
    for row in result["rows"]:
        # |NLL error| <= |endpoint part| + |divergence part| point by point, so also on average
        parts = row["endpoint_err_vs_reference"] + row["divergence_err_vs_reference"]
        assert row["abs_err_vs_reference"] <= parts + 1e-9
        assert row["x0_dist_vs_reference"] > 0
        shown = cells[row["method"]][[1, 2, 4, 8].index(row["K"])]
        assert shown == (
            f"{row['endpoint_err_vs_reference']:.4f}",
            f"{row['divergence_err_vs_reference']:.4f}",
            f"{row['x0_dist_vs_reference']:.3f}",
        )
    # the split recomputed here for one row: K = 1 of the F2D2 run against the teacher's dopri5 solve
    x = make_dataset(resolve_run(cfg)["data"]).sample(64, torch.Generator().manual_seed(12345))
    ref = reference_log_likelihood(load_model(tmp_path / "b" / "two-way" / "teacher" / "checkpoint.pt"), x)
    res = log_likelihood(load_model(tmp_path / "b" / "two-way" / STAGES[-1] / "checkpoint.pt"), x, 1)
    end, end_ref = (-0.5 * z.double().pow(2).sum(1) - math.log(2 * math.pi) for z in (res.x0, ref.x0))
    row = next(r for r in result["rows"] if r["method"] == STAGES[-1] and r["K"] == 1)
    assert row["x0_dist_vs_reference"] == pytest.approx(float((res.x0 - ref.x0).norm(dim=1).mean()), rel=1e-5)
    assert row["endpoint_err_vs_reference"] == pytest.approx(float((end - end_ref).abs().mean()), rel=1e-5)
    div_part = (res.log_prob.double() - end) - (ref.log_prob.double() - end_ref)
    assert row["divergence_err_vs_reference"] == pytest.approx(float(div_part.abs().mean()), rel=1e-5)
    assert re.search(r": \d+x faster; the reference took \d+ NFE", printed)
    times = re.search(r"training wall time per stage: (.*)", printed).group(1)
    assert sorted(re.findall(r"two-way/(\w+) \d+ s", times)) == sorted(STAGES)
