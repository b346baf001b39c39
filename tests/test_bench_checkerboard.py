"""bench/checkerboard.py on a tiny budget: one run prints every method's error at every K (the same numbers
as its JSON), the reference's gap to the analytic NLL, the speed ratio and each stage's training time."""

from __future__ import annotations

import json
import re

import pytest
import yaml

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
    table = printed.split("mean per-point |NLL - reference NLL| (nats)\n", 1)[1].splitlines()
    assert table[0].split()[-4:] == ["K=1", "K=2", "K=4", "K=8"]
    lines = {line.split()[1]: line.split()[-4:] for line in table[1:] if line.startswith("two-way ")}
    assert set(lines) == set(STAGES)
    for row in result["rows"]:
        assert lines[row["method"]][[1, 2, 4, 8].index(row["K"])] == f"{row['abs_err_vs_reference']:.4f}"
    assert re.search(r": \d+x faster; the reference took \d+ NFE", printed)
    times = re.search(r"training wall time per stage: (.*)", printed).group(1)
    assert sorted(re.findall(r"two-way/(\w+) \d+ s", times)) == sorted(STAGES)
