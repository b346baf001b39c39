"""The training loop: resume equals an uninterrupted run; non-finite losses stop it loudly."""

from __future__ import annotations

import json

import pytest
import torch

from f2d2.config.resolve import resolve_run
from f2d2.io.checkpoint import load_checkpoint, load_model
from f2d2.training import loop as train_mod
from f2d2.training.failures import NonFiniteLossError
from f2d2.training.loop import train
from pipeline_helpers import CallingObjective


def tiny_run(steps: int = 30, lr_schedule: str = "constant", **train_keys) -> dict:
    return resolve_run(
        {
            "seed": 3,
            "data": {"name": "checkerboard"},
            "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2},
            "train": {
                "steps": steps,
                "batch_size": 64,
                "lr": 1e-3,
                "warmup": 5,
                "ema_decay": 0.9,
                "log_every": 5,
                "ckpt_every": 10,
                "lr_schedule": lr_schedule,
                **train_keys,
            },
        }
    )


def _states_equal(a: dict, b: dict) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def _log(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


HALF_LIFE = {"ema_halflife_steps": 8, "ema_rampup": 0.25}  # ramped up to step 32: past the resume at step 20


@pytest.mark.parametrize(
    "lr_schedule, ema",
    [("constant", {}), ("cosine", {}), ("constant", HALF_LIFE)],
    ids=["constant", "cosine", "half-life"],
)
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, monkeypatch, lr_schedule, ema):
    run = tiny_run(30, lr_schedule, **ema)
    full = train(run, tmp_path / "full", progress=False)

    real = train_mod.build_objective
    calls = {"n": 0}

    def crashing(cfg, **nets):
        objective = real(cfg, **nets)

        def wrapped(*args):
            calls["n"] += 1
            if calls["n"] == 24:  # after the step-20 checkpoint and the step-20 log line
                raise KeyboardInterrupt("simulated kill")
            return objective(*args)

        return CallingObjective(wrapped)

    monkeypatch.setattr(train_mod, "build_objective", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(run, tmp_path / "cut", progress=False)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["step"] == 20
    monkeypatch.setattr(train_mod, "build_objective", real)
    resumed = train(run, tmp_path / "cut", progress=False)

    a, b = load_checkpoint(full), load_checkpoint(resumed)
    assert a["step"] == b["step"] == 30
    for key in ("model", "ema", "optimizer", "scheduler", "rng"):
        assert _states_equal(a[key], b[key]), key
    assert _log(tmp_path / "full") == _log(tmp_path / "cut")  # no duplicated or lost log lines
    assert [r["step"] for r in _log(tmp_path / "full")] == [5, 10, 15, 20, 25, 30]
    lrs = [r["lr"] for r in _log(tmp_path / "full")]
    if lr_schedule == "constant":
        assert lrs == [1e-3] * 6
    else:  # the warm-up ends at step 5, then a half cosine reaches 0 at step 30
        assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(0, abs=1e-12)
        assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_half_life_ema_is_not_the_constant_decay(tmp_path):
    """train.ema_halflife_steps replaces train.ema_decay; the raw weights do not depend on either."""
    const, half = (
        load_checkpoint(train(tiny_run(12, **keys), tmp_path / name, progress=False))
        for name, keys in (("const", {}), ("half", HALF_LIFE))
    )
    assert _states_equal(const["model"], half["model"])
    assert not _states_equal(const["ema"], half["ema"]) and half["ema"]["n_averaged"].item() == 12


def test_training_lowers_the_flow_matching_loss(tmp_path):
    from f2d2.data import make_dataset
    from f2d2.objectives import FlowMatching

    def held_out_loss(ckpt) -> float:
        model = load_model(ckpt, ema=False)
        gen = torch.Generator().manual_seed(99)
        x1 = make_dataset({"name": "checkerboard"}).sample(8192, gen)
        with torch.no_grad():
            return float(FlowMatching()(model, x1, gen)["loss"])

    before = held_out_loss(train(tiny_run(1), tmp_path / "one", progress=False))
    after = held_out_loss(train(tiny_run(200), tmp_path / "many", progress=False))
    assert after < 0.85 * before
    model = load_model(tmp_path / "many" / "checkpoint.pt")
    assert not model.flow_map and not model.has_div_head
    assert not model.training


def test_resume_refuses_a_different_config(tmp_path):
    train(tiny_run(10), tmp_path, progress=False)
    other = tiny_run(10)
    other["train"]["lr"] = 5e-3
    with pytest.raises(RuntimeError, match="different config"):
        train(other, tmp_path, progress=False)
    longer = tiny_run(20)  # extending the run is allowed
    assert load_checkpoint(train(longer, tmp_path, progress=False))["step"] == 20


def test_a_longer_cosine_run_is_another_run(tmp_path):
    """A cosine lr reaches 0 at train.steps, so more steps change every step's lr: not a resume. The pipeline's
    restart_on_change then trains afresh (equal to a fresh workdir), not on from the shorter run's end."""
    train(tiny_run(10, "cosine"), tmp_path / "run", progress=False)
    with pytest.raises(RuntimeError, match="with a constant lr_schedule, steps may change"):
        train(tiny_run(20, "cosine"), tmp_path / "run", progress=False)
    ckpt = load_checkpoint(train(tiny_run(20, "cosine"), tmp_path / "run", progress=False, restart_on_change=True))
    fresh = load_checkpoint(train(tiny_run(20, "cosine"), tmp_path / "fresh", progress=False))
    assert ckpt["step"] == 20 and _states_equal(ckpt["model"], fresh["model"])
    assert load_checkpoint(tmp_path / "run" / "stale" / "checkpoint.pt")["step"] == 10


def test_restart_on_change_sets_the_other_configs_checkpoint_aside(tmp_path):
    """What the pipeline does when a run's settings changed: the old checkpoint and metrics go to stale/, and the
    run trains afresh from step 0 with the new settings (its checkpoint equals a fresh workdir's)."""
    train(tiny_run(10), tmp_path / "run", progress=False)
    old = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    other = tiny_run(6)
    other["train"]["lr"] = 5e-3
    ckpt = load_checkpoint(train(other, tmp_path / "run", progress=False, restart_on_change=True))
    fresh = load_checkpoint(train(other, tmp_path / "fresh", progress=False))
    assert ckpt["step"] == 6 and ckpt["config"]["train"]["lr"] == 5e-3
    assert _states_equal(ckpt["model"], fresh["model"])
    stale = load_checkpoint(tmp_path / "run" / "stale" / "checkpoint.pt")
    assert stale["step"] == 10 and _states_equal(stale["model"], old["model"])
    assert (tmp_path / "run" / "stale" / "metrics.jsonl").exists()
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6  # the new run's log only


def test_non_finite_loss_names_step_and_terms(tmp_path, monkeypatch):
    def nan_objective(cfg, **nets):
        def objective(model, x1, gen):
            fm = model.velocity(x1, torch.zeros(len(x1))).pow(2).mean() * float("nan")
            return {"loss": fm, "fm": fm.detach()}

        return CallingObjective(objective)

    monkeypatch.setattr(train_mod, "build_objective", nan_objective)
    with pytest.raises(NonFiniteLossError, match=r"step 1: loss=nan, fm=nan"):
        train(tiny_run(5), tmp_path, progress=False)
