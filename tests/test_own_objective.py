"""Adding an objective takes one class and one name (docs/objectives.md): a user's objective from the test
folder (tests/own_objective.py), registered here, goes through the start-up check, a few training steps and
Table 3, its options resolved and its label in the table."""

from __future__ import annotations

import copy
import json
import sys

import pandas as pd
import pytest
import yaml

from f2d2.config import experiment
from f2d2.config.resolve import ConfigError
from f2d2.objectives import OBJECTIVES, register
from f2d2.preflight.checks import check_experiment
from f2d2.preflight.runs import run_fingerprint, run_labels
from f2d2.training.loop import train
from own_objective import PoweredFlowMatching
from pipeline_helpers import ROOT

BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture
def powered():
    register("powered_fm", PoweredFlowMatching, "Powered FM")
    yield
    OBJECTIVES.pop("powered_fm")


def experiment_with_mine(**options) -> dict:
    """The default experiment cut to its teacher and a stage ``mine`` of the user's objective."""
    cfg = copy.deepcopy(BASE)
    cfg["stages"] = {
        "teacher": cfg["stages"]["teacher"],
        "mine": {"objective": {"name": "powered_fm", **options}, "train": {"init_from": "teacher"}},
    }
    cfg.pop("ablations", None)
    cfg["figures"]["density"]["runs"] = ["teacher", "mine"]
    return cfg


def test_a_registered_objective_is_checked_trained_and_tabulated(powered, tmp_path):
    cfg = experiment_with_mine(power=0.5)
    check_experiment(cfg, data_files=False)
    with pytest.raises(ConfigError) as err:
        check_experiment(experiment_with_mine(power=-1), data_files=False)
    assert "objective.power = -1; expected a number > 0" in str(err.value) and "stages.mine" in str(err.value)
    with pytest.raises(ConfigError, match=r"objective 'powered_fm' has no option\(s\) \['pwr'\]"):
        check_experiment(experiment_with_mine(pwr=2.0), data_files=False)
    with pytest.raises(ValueError, match="'powered_fm' is taken"):
        register("powered_fm", PoweredFlowMatching, "Again")

    run = experiment.run_config(cfg, "mine")
    run["train"].update(steps=6, batch_size=32, warmup=1, log_every=2, ckpt_every=3, init_from=None)
    workdir = tmp_path / "train" / "mine"
    train(run, workdir, progress=False)
    written = yaml.safe_load((workdir / "config.yaml").read_text())
    assert written["objective"] == {"name": "powered_fm", "power": 0.5, "weight": 1.0}  # the default resolved
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(set(r) >= {"loss", "fm"} for r in rows)

    assert run_fingerprint(cfg, "mine") == run_fingerprint(experiment_with_mine(power=0.5, weight=1.0), "mine")
    assert run_fingerprint(cfg, "mine") != run_fingerprint(experiment_with_mine(power=0.5, weight=2.0), "mine")

    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    try:
        import table_hparams
    finally:
        sys.path.pop(0)
    out = tmp_path / "table3.csv"
    table_hparams.main({"mine": str(workdir / "config.yaml")}, "cfg.yaml", str(out), labels=run_labels(cfg))
    table = pd.read_csv(out)
    assert table["method"].tolist() == ["Powered FM"]
    assert table["objective.power"].tolist() == [0.5] and table["objective.weight"].tolist() == [1.0]
