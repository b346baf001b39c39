"""The experiment model (f2d2.config.experiment): run names and overrides, run configs, the reference
teacher, F2D2 runs, ablation tables and the stage order; torch-free."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from f2d2.config import experiment
from f2d2.config.resolve import ConfigError
from f2d2.preflight.runs import own_flow_source, own_flow_stages
from pipeline_helpers import ROOT

BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
STAGES = [
    "teacher",
    "shortcut",
    "shortcut_distill",
    "meanflow",
    "shortcut_f2d2",
    "shortcut_distill_f2d2",
    "meanflow_f2d2",
]


def test_runs_are_the_stages_then_the_ablation_values_off_the_stage():
    cfg = copy.deepcopy(BASE)
    cfg["ablations"]["div_scale"]["values"] = [0.1, 1.0, 10.0]
    cfg["ablations"]["lam"]["values"] = [0.01, 0.1, 1.0, 10.0]
    cfg["stages"]["shortcut_distill_f2d2"]["objective"]["lam"] = 1.0
    runs = experiment.runs(cfg)
    assert list(runs)[: len(STAGES)] == STAGES and all(runs[s] == (s, []) for s in STAGES)
    stage = "shortcut_distill_f2d2"
    assert {r: v for r, v in runs.items() if r not in STAGES} == {  # 1.0 is the stage's own value: no run
        f"{stage}__div_scale0.1": (stage, ["model.div_scale=0.1"]),
        f"{stage}__div_scale10": (stage, ["model.div_scale=10.0"]),
        f"{stage}__lam0.01": (stage, ["objective.lam=0.01"]),
        f"{stage}__lam0.1": (stage, ["objective.lam=0.1"]),
        f"{stage}__lam10": (stage, ["objective.lam=10.0"]),
    }
    assert experiment.ablation_runs(cfg, "lam") == [
        (0.01, f"{stage}__lam0.01"),
        (0.1, f"{stage}__lam0.1"),
        (1.0, stage),
        (10.0, f"{stage}__lam10"),
    ]
    assert experiment.ablation_tables(BASE) == {"div_scale": 5, "lam": 6}


def test_own_flow_stages_are_the_f2d2_stages_whose_head_learns_their_own_divergence():
    assert own_flow_stages(BASE) == ["shortcut_f2d2"]  # the default: div_source self
    cfg = copy.deepcopy(BASE)
    cfg["stages"]["meanflow_f2d2"]["objective"].update(div_source="self", tangent="conditional")
    cfg["stages"]["shortcut_f2d2"]["objective"]["div_source"] = "teacher"
    cfg["stages"]["shortcut_f2d2"]["objective"]["teacher"] = "teacher"
    assert own_flow_stages(cfg) == ["meanflow_f2d2"]
    cfg["stages"]["shortcut"]["objective"]["div_source"] = "self"  # no divergence head: not F2D2
    assert own_flow_stages(cfg) == ["meanflow_f2d2"]


def test_own_flow_source_is_the_network_whose_velocity_the_head_learned():
    assert own_flow_source(BASE, "shortcut_f2d2") == "shortcut"  # self_source start: its warm start
    cfg = copy.deepcopy(BASE)
    cfg["stages"]["shortcut_f2d2"]["objective"]["self_source"] = "live"  # the paper's form: the run itself
    assert own_flow_source(cfg, "shortcut_f2d2") == "shortcut_f2d2"
    cfg["stages"]["shortcut_f2d2"]["objective"]["self_source"] = "start"
    cfg["stages"]["shortcut_f2d2"]["train"]["init_from"] = "elsewhere/checkpoint.pt"  # a checkpoint of one's own
    assert own_flow_source(cfg, "shortcut_f2d2") == "elsewhere/checkpoint.pt"


def test_run_config_is_the_stage_with_the_overrides():
    value, name = next((v, r) for v, r in experiment.ablation_runs(BASE, "lam") if r != "shortcut_distill_f2d2")
    run = experiment.run_config(BASE, name, stage_root="out")
    assert run["objective"]["lam"] == value != BASE["stages"]["shortcut_distill_f2d2"]["objective"]["lam"]
    assert run["objective"]["teacher"] == "out/teacher/checkpoint.pt"
    assert run["train"]["init_from"] == "out/shortcut_distill/checkpoint.pt"
    assert experiment.dependencies(BASE, name) == ["shortcut_distill", "teacher"]
    with pytest.raises(ConfigError, match="'ghost' is not a training run"):
        experiment.run_config(BASE, "ghost")


def test_f2d2_runs_have_a_divergence_head():
    f2d2 = experiment.f2d2_runs(BASE)
    assert f2d2[:3] == ["shortcut_f2d2", "shortcut_distill_f2d2", "meanflow_f2d2"]
    assert set(f2d2[3:]) == {r for r in experiment.runs(BASE) if "__" in r}


def test_the_reference_is_the_named_teacher_else_the_first_root():
    assert experiment.reference_stage(BASE) == "teacher"
    cfg = copy.deepcopy(BASE)
    cfg["stages"] = {("fm" if k == "teacher" else k): v for k, v in cfg["stages"].items()}
    for stage in cfg["stages"].values():
        for sec, key in (("train", "init_from"), ("objective", "teacher")):
            if stage.get(sec, {}).get(key) == "teacher":
                stage[sec][key] = "fm"
    assert experiment.reference_stage(cfg) == "fm"
    roots = {"stages": {"warm": {"train": {"init_from": "base"}}, "base": {}, "other": {}}}
    assert experiment.reference_stage(roots) == "base"
    two = copy.deepcopy(BASE)
    two["stages"]["teacher2"] = {"objective": {"name": "flow_matching"}}
    two["stages"]["meanflow_f2d2"]["objective"]["teacher"] = "teacher2"
    with pytest.raises(ConfigError, match=r"different teachers \['teacher', 'teacher2'\]"):
        experiment.reference_stage(two)


def test_stage_order_follows_the_dependencies():
    cfg = {"stages": {"a": {}, "c": {"train": {"init_from": "b"}}, "b": {}, "d": {}}}
    assert experiment.stage_order(cfg) == ["a", "b", "d", "c"]  # passes in config order
    assert experiment.stage_order(cfg, ["c"]) == ["b", "c"]
    assert experiment.stage_order(BASE, ["meanflow_f2d2"]) == ["teacher", "meanflow", "meanflow_f2d2"]
    with pytest.raises(ConfigError, match="'z' is not a stage"):
        experiment.stage_order(cfg, ["z"])
    circle = {"stages": {"a": {"train": {"init_from": "b"}}, "b": {"train": {"init_from": "a"}}}}
    with pytest.raises(ConfigError, match="circle"):
        experiment.stage_order(circle)


def test_imports_without_torch():
    code = (
        "import sys, f2d2.config.experiment, f2d2.registry; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
