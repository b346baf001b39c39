"""train.precision, train.compile, train.data_on_device: refused or working on a CPU-only machine, and the
defaults leave training as it was."""

from __future__ import annotations

import pytest
import torch

from f2d2.config.resolve import ConfigError, resolve_run
from f2d2.data import make_dataset
from f2d2.io.checkpoint import load_checkpoint
from f2d2.nets import build_model
from f2d2.objectives import OBJECTIVES, Objective, build_objective
from f2d2.preflight.checks import check_run, run_problems
from f2d2.training import loop as train_mod
from f2d2.training import speed
from f2d2.training.loop import train
from pipeline_helpers import train_default_teacher

UNET = dict(
    arch="unet",
    in_channels=3,
    image_size=8,
    channels=8,
    channel_mult=[1, 2],
    attn_resolutions=[4],
    num_res_blocks=1,
    dropout=0.0,
)


def _run(**train_keys) -> dict:
    return resolve_run(
        {
            "seed": 1,
            "data": {"name": "shapes", "size": 8, "n_train": 64, "n_test": 16},
            "model": {k: v for k, v in UNET.items() if k not in ("in_channels", "image_size")},
            "train": {"steps": 4, "batch_size": 8, "warmup": 1, "log_every": 2, **train_keys},
        }
    )


def test_defaults_are_the_old_behaviour():
    tr = _run()["train"]
    assert (tr["precision"], tr["compile"], tr["data_on_device"]) == ("float32", False, False)
    old = _run()
    for key in ("precision", "compile", "data_on_device"):
        del old["train"][key]  # a checkpoint written before these keys existed still resumes
    assert train_mod._resume_key(old) == train_mod._resume_key(_run())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bfloat16_on_a_cpu_is_refused_in_one_line(tmp_path, capsys):
    found = run_problems(_run(precision="bfloat16"))
    assert len(found) == 1 and "train.precision = 'bfloat16' with train.device = 'cpu'" in found[0]
    code = train_default_teacher(tmp_path / "w", "train.precision=bfloat16")
    err = capsys.readouterr().err
    assert code == 2 and "train.precision = 'bfloat16' with train.device = 'cpu'" in err, err
    assert not (tmp_path / "w").exists()


def test_compile_without_a_compiler_is_refused(monkeypatch):
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    with pytest.raises(
        ConfigError,
        match=r"train.compile = true on train.device = 'cpu': torch.compile on CPU "
        r"needs a C\+\+ compiler",
    ):
        check_run(_run(compile=True))
    monkeypatch.setattr(speed.importlib.util, "find_spec", lambda name: None)
    assert "needs Triton" in speed.compiler_problem(torch.device("cuda"))


def test_compile_skips_the_network_meanflow_differentiates_with_jvp():
    teacher = build_model(UNET)
    for name, compiled in (("shortcut_distill", True), ("meanflow_f2d2", False)):
        model = build_model({**UNET, "div_head": True, "flow_map": True})
        obj = build_objective(
            {"name": name, **({"div_method": "hutchinson"} if "f2d2" in name else {})}, teacher=teacher
        )
        done = speed.compile_for_training(model, obj)
        assert (model._compiled_call_impl is not None) == compiled, done
        assert teacher._compiled_call_impl is not None and "teacher compiled" in done
        assert list(model.state_dict()) == list(build_model({**UNET, "div_head": True}).state_dict())


def test_data_on_device_draws_the_same_images():
    data = make_dataset({"name": "shapes", "size": 8, "n_train": 50, "n_test": 5})
    plain = data.sample(32, torch.Generator().manual_seed(0))
    data.keep_on_device("cpu")
    assert torch.equal(data.sample(32, torch.Generator().manual_seed(0)), plain)


def test_data_on_device_trains_bit_identically(tmp_path):
    a = load_checkpoint(train(_run(), tmp_path / "a", progress=False))
    b = load_checkpoint(train(_run(data_on_device=True), tmp_path / "b", progress=False))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_runs_under_bfloat16_autocast(name):
    """The mechanism itself (CPU autocast works in torch; the config refuses it only for speed): finite float32
    terms and gradients, MeanFlow's JVP included (taken with autocast off)."""
    torch.manual_seed(0)
    f2d2 = name.endswith("_f2d2")
    model = build_model({**UNET, "div_head": f2d2, "div_scale": 100.0, "flow_map": True})
    teacher = build_model(UNET) if "distill" in name or (f2d2 and not name.startswith("shortcut_f2d2")) else None
    opts = {"div_method": "hutchinson", "div_source": "self" if teacher is None else "teacher"} if f2d2 else {}
    if name.startswith("shortcut"):
        opts["semigroup_log2"] = 2
    obj = build_objective({"name": name, **opts}, teacher=teacher)
    x1 = torch.rand(8, 3, 8, 8) * 2 - 1
    speed.setup({"precision": "bfloat16", "compile": False, "data_on_device": False}, None, model, obj, "cpu")
    with speed.autocast("bfloat16", torch.device("cpu")):
        terms = obj(model, x1, torch.Generator().manual_seed(0))
    terms["loss"].backward()
    assert terms["loss"].dtype == torch.float32 and all(torch.isfinite(v).all() for v in terms.values())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_compile_reads_the_objectives_declaration_not_its_class():
    """speed.py branched on isinstance(objective, MeanFlow): a user's JVP objective was compiled anyway."""

    class MyJVP(Objective):
        uses_jvp = True

    model = build_model({**UNET, "flow_map": True})
    done = speed.compile_for_training(model, MyJVP())
    assert model._compiled_call_impl is None and "MyJVP calls it inside torch.func.jvp" in done[0]
