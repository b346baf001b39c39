"""Runtime failures stop a job with a message saying what happened and what to change."""

from __future__ import annotations

import pytest
import torch

from f2d2.cli import commands, main
from f2d2.config.resolve import resolve_run
from f2d2.objectives import OBJECTIVES, MeanFlow, Shortcut
from f2d2.training import loop as train_mod
from f2d2.training.failures import DIVERGENCE_LIMIT, DivergenceHeadError, NonFiniteLossError, check_terms
from f2d2.training.loop import train
from pipeline_helpers import ROOT, CallingObjective

CONFIG = str(ROOT / "config" / "config.yaml")
TINY = [
    "--set",
    "model.hidden=16",
    "--set",
    "model.depth=1",
    "--set",
    "train.steps=3",
    "--set",
    "train.warmup=1",
    "--set",
    "train.batch_size=32",
    "--no-progress",
]


def f2d2_run(div_scale: float) -> dict:
    return resolve_run(
        {
            "seed": 0,
            "model": {
                "arch": "mlp",
                "hidden": 16,
                "depth": 2,
                "time_freqs": 2,
                "div_head": True,
                "div_scale": div_scale,
            },
            "objective": {"name": "shortcut_f2d2", "div_source": "self"},
            "train": {"steps": 5, "batch_size": 64, "warmup": 1, "log_every": 1, "ckpt_every": 5},
        }
    )


def test_a_bad_scaling_c_stops_with_advice_on_c(tmp_path):
    with pytest.raises(DivergenceHeadError) as err:
        train(f2d2_run(1e-7), tmp_path / "bad", progress=False)
    msg = str(err.value)
    assert msg.startswith("divergence head output exploded at step 1: ")
    assert "model.div_scale c = 1e-07" in msg and "raise c" in msg and "train.lr" in msg
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()
    train(f2d2_run(1.0), tmp_path / "good", progress=False)  # the same run with a sane c trains


def test_check_terms_thresholds():
    ok = {"loss": torch.tensor(1.0), "div": torch.tensor(DIVERGENCE_LIMIT / 2)}
    check_terms(ok, 1, 1.0, Shortcut.DIVERGENCE_TERMS)
    with pytest.raises(DivergenceHeadError, match=r"step 7: loss=1, div=2e\+06"):
        check_terms({**ok, "div": torch.tensor(2 * DIVERGENCE_LIMIT)}, 7, 1.0, Shortcut.DIVERGENCE_TERMS)
    with pytest.raises(DivergenceHeadError, match="mf_div"):
        check_terms(
            {"loss": torch.tensor(float("nan")), "mf_div": torch.tensor(float("inf"))},
            2,
            3.0,
            MeanFlow.DIVERGENCE_TERMS,
        )
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 2: loss=nan, fm=nan\. Lower train\.lr"):
        check_terms({"loss": torch.tensor(float("nan")), "fm": torch.tensor(float("nan"))}, 2, 1.0, ())


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_divergence_term_an_objective_declares_is_watched(name):
    """The failure check reads the objective's own declaration: MeanFlow's semigroup head term sg_div was
    missing from a hand-kept list (1e7 passed while mf_div 1e7 raised)."""
    cls = OBJECTIVES[name].build
    for term in cls.DIVERGENCE_TERMS:
        with pytest.raises(DivergenceHeadError, match=term):
            check_terms({"loss": torch.tensor(1.0), term: torch.tensor(1e7)}, 3, 1.0, cls.DIVERGENCE_TERMS)
    assert set(MeanFlow.DIVERGENCE_TERMS) >= {"mf_div", "sg_div"}


def test_cli_turns_training_failures_into_one_line(tmp_path, monkeypatch, capsys):
    def nan_objective(cfg, **nets):
        return CallingObjective(
            lambda model, x1, gen: {"loss": model.velocity(x1, torch.zeros(len(x1))).sum() * float("nan")}
        )

    monkeypatch.setattr(train_mod, "build_objective", nan_objective)
    assert main(["train", "--config", CONFIG, "--stage", "teacher", "--workdir", str(tmp_path / "w"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("f2d2 train: error: non-finite loss at step 1: loss=nan.") and err.count("\n") == 1


def test_out_of_memory_in_training_names_the_batch_size(tmp_path, monkeypatch, capsys):
    def hungry_objective(cfg, **nets):
        def objective(model, x1, gen):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore details")

        return CallingObjective(objective)

    monkeypatch.setattr(train_mod, "build_objective", hungry_objective)
    assert main(["train", "--config", CONFIG, "--stage", "teacher", "--workdir", str(tmp_path / "w"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "f2d2 train: error: out of memory training on cpu with "
        "train.batch_size = 32 (CUDA out of memory. Tried to allocate"
    )
    assert "lower train.batch_size (e.g. --set train.batch_size=16" in err


def test_out_of_memory_in_evaluation_names_the_option(tmp_path, monkeypatch, capsys):
    assert main(["train", "--config", CONFIG, "--stage", "teacher", "--workdir", str(tmp_path / "w"), *TINY]) == 0
    pts = tmp_path / "p.csv"
    pts.write_text("0.1,0.2\n0.3,0.4\n")

    def hungry(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(commands, "log_likelihood", hungry)
    monkeypatch.setattr(commands, "sample_in_batches", hungry)
    ckpt = str(tmp_path / "w" / "checkpoint.pt")
    assert (
        main(
            [
                "nll",
                "--checkpoint",
                ckpt,
                "--points",
                str(pts),
                "--steps",
                "1",
                "--batch-size",
                "64",
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 2
    )
    assert (
        "out of memory on cpu with --batch-size 64 (CUDA out of memory.); lower --batch-size (e.g. 32)"
        in capsys.readouterr().err
    )
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                ckpt,
                "--n",
                "10",
                "--steps",
                "1",
                "--batch-size",
                "8",
                "--out",
                str(tmp_path / "s.npy"),
            ]
        )
        == 2
    )
    assert (
        "out of memory on cpu drawing --batch-size 8 samples at once (CUDA out of memory.); lower --batch-size "
        "(e.g. 4)" in capsys.readouterr().err
    )
