"""Shareable models: ``f2d2 export`` writes model.safetensors + config.json, ``f2d2.load`` reads them without
pickle and scores points bit for bit as the checkpoint does; an outside teacher's weights may be .safetensors."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import f2d2
from external_models import time_mlp
from f2d2.cli import main
from f2d2.config.resolve import resolve_run
from f2d2.io.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from f2d2.io.export import export_model
from f2d2.nets import build_model
from f2d2.preflight.checks import check_run
from f2d2.training.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Shortcut-Distill-F2D2 run (divergence head, Fourier point features) and its export: (checkpoint,
    folder)."""
    work = tmp_path_factory.mktemp("export")
    torch.save(time_mlp(hidden=16).state_dict(), work / "velocity.pt")
    teacher = {"factory": "external_models:time_mlp", "state_dict": str(work / "velocity.pt"), "data_shape": [2]}
    run = resolve_run(
        {
            "seed": 5,
            "model": {"hidden": 16, "depth": 2, "time_freqs": 2, "x_freqs": 4, "div_head": True},
            "objective": {"name": "shortcut_distill_f2d2", "teacher": {**teacher, "kwargs": {"hidden": 16}}},
            "train": {"steps": 12, "batch_size": 32, "warmup": 2, "log_every": 6, "ckpt_every": 6},
        }
    )
    ckpt = train(run, work / "run", progress=False)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(work / "shared")]) == 0
    return ckpt, work / "shared"


def test_export_holds_the_ema_weights_and_a_config_that_rebuilds_the_network(trained, capsys):
    ckpt, folder = trained
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    run = load_checkpoint(ckpt)["config"]
    assert config["model"] == {**config["model"], **run["model"]} and config["data_shape"] == [2]
    assert {"div_scale": 1.0, "div_hidden": [], "x_scale": 1.0}.items() <= config["model"].items()  # defaults too
    assert config["provenance"] == {
        "f2d2_version": f2d2.__version__,
        "seed": 5,
        "step": 12,
        "objective": run["objective"]["name"],
        "data": run["data"]["name"],
        "weights": "ema",
        "checkpoint": str(ckpt),
    }
    shared, original = f2d2.load(folder), load_model(ckpt)
    assert not shared.training and shared.has_div_head
    mine, theirs = shared.state_dict(), original.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert all(v.dtype == torch.float32 for v in mine.values())

    raw = folder.parent / "raw"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(raw), "--raw"]) == 0
    assert "raw weights" in capsys.readouterr().out
    raw_model = f2d2.load(raw)
    assert all(torch.equal(raw_model.state_dict()[k], v) for k, v in load_checkpoint(ckpt)["model"].items())
    assert json.loads((raw / "config.json").read_text())["provenance"]["weights"] == "raw"


def test_log_prob_through_the_folder_equals_that_through_the_checkpoint_bit_for_bit(trained):
    ckpt, folder = trained
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    for steps in (1, 3, None):
        assert torch.equal(f2d2.log_prob(folder, x, steps=steps), f2d2.log_prob(ckpt, x, steps=steps)), steps
    assert torch.equal(f2d2.log_prob(str(folder), x, div="exact"), f2d2.log_prob(str(ckpt), x, div="exact"))


def test_the_export_loads_without_pickle(trained, monkeypatch):
    ckpt, folder = trained
    weights = (folder / "model.safetensors").read_bytes()
    header = int.from_bytes(weights[:8], "little")  # safetensors: a JSON header, then raw tensor bytes
    assert json.loads(weights[8 : 8 + header])["__metadata__"] == {"format": "pt"}

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(module, name, refuse)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(f2d2.log_prob(folder, x)).all()
    with pytest.raises(CheckpointError, match="pickle used"):  # the checkpoint itself does need it
        f2d2.load(ckpt)


def test_a_config_that_does_not_fit_its_weights_or_a_missing_file_is_named(trained, tmp_path):
    _, folder = trained
    config = json.loads((folder / "config.json").read_text())
    weights = (folder / "model.safetensors").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(weights)
    (bad / "config.json").write_text(json.dumps({**config, "model": {**config["model"], "hidden": 24}}))
    with pytest.raises(CheckpointError) as err:
        f2d2.load(bad)
    assert f"{bad / 'config.json'} does not fit {bad / 'model.safetensors'}: missing keys [], unexpected keys [], " in (
        msg := str(err.value)
    )
    assert "shape mismatches ['d_head.weight', 'trunk.0.bias', 'trunk.0.weight', 'trunk.2.bias'" in msg

    (bad / "config.json").write_text(json.dumps({**config, "model": {**config["model"], "div_head": False}}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['d_head.bias', 'd_head.weight'\]"):
        f2d2.load(bad)
    (bad / "config.json").write_text(json.dumps({**config, "data_shape": [3]}))
    with pytest.raises(CheckpointError, match=r"data_shape = \[3\], but its model section builds .* \[2\]"):
        f2d2.load(bad)
    (bad / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{bad / 'model.safetensors'} is truncated or not a safetensors file"):
        f2d2.load(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"{bad / 'model.safetensors'} not found"):
        f2d2.load(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{bad / 'config.json'} is not JSON"):
        f2d2.load(bad)
    (bad / "config.json").unlink()
    with pytest.raises(CheckpointError, match=f"{bad / 'config.json'} not found; an exported model is a folder"):
        f2d2.load(bad)
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'none.pt'} not found"):
        f2d2.load(tmp_path / "none.pt")


def test_the_cli_refuses_a_missing_checkpoint_and_an_out_that_is_a_file(trained, tmp_path, capsys):
    ckpt, _ = trained
    missing = tmp_path / "none.pt"
    assert main(["export", "--checkpoint", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"f2d2 export: error: checkpoint {missing} not found\n" and not (tmp_path / "out").exists()
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert f"export folder {taken} is a file; expected a folder" in err and err.count("\n") == 1
    assert taken.read_text() == "mine"


def test_an_outside_teacher_in_safetensors_trains_as_its_pt_twin(tmp_path):
    state = time_mlp(hidden=16).state_dict()
    torch.save(state, tmp_path / "velocity.pt")
    save_file(state, tmp_path / "velocity.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 16)
    base = {"factory": "external_models:time_mlp", "kwargs": {"hidden": 16}, "data_shape": [2]}
    specs = {s: {**base, "state_dict": str(tmp_path / f"velocity.{s}")} for s in ("pt", "safetensors")}
    x, t = torch.randn(8, 2), torch.rand(8)
    teachers = {s: f2d2.load_teacher_spec(spec) for s, spec in specs.items()}
    assert torch.equal(teachers["pt"].velocity(x, t), teachers["safetensors"].velocity(x, t))
    with pytest.raises(ValueError, match=r"could not be read as tensors only .*safetensors.torch.save_file"):
        f2d2.load_teacher_spec({**base, "state_dict": str(tmp_path / "broken.safetensors")})

    logs = {}
    for suffix, spec in specs.items():
        run = resolve_run(
            {
                "model": {"hidden": 16, "depth": 2, "time_freqs": 2, "div_head": True},
                "objective": {"name": "shortcut_distill_f2d2", "teacher": spec},
                "train": {"steps": 2, "batch_size": 32, "warmup": 1, "log_every": 1, "ckpt_every": 2},
            }
        )
        check_run(run)
        ckpt = train(run, tmp_path / suffix, progress=False)
        logs[suffix] = (tmp_path / suffix / "metrics.jsonl").read_text().splitlines()
        logs[suffix] = [{k: v for k, v in json.loads(line).items() if "time" not in k} for line in logs[suffix]]
        logs[suffix].append(f2d2.log_prob(ckpt, x, steps=2))
    assert logs["pt"][:-1] == logs["safetensors"][:-1]
    assert torch.equal(logs["pt"][-1], logs["safetensors"][-1])


def test_a_unet_with_a_divergence_head_round_trips(tmp_path):
    cfg = {"arch": "unet", "in_channels": 1, "image_size": 8, "channels": 8, "channel_mult": [1, 2]}
    cfg |= {"attn_resolutions": [4], "num_res_blocks": 1, "div_head": True, "div_hidden": [8, 8], "flow_map": True}
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    ema = {**{f"module.{k}": v + 0.01 for k, v in state.items()}, "n_averaged": torch.tensor(3)}
    run = {"seed": 2, "model": cfg, "objective": {"name": "meanflow_f2d2"}, "data": {"name": "shapes"}}
    save_checkpoint(tmp_path / "unet.pt", {"config": run, "step": 7, "model": state, "ema": ema})
    export_model(tmp_path / "unet.pt", tmp_path / "shared")
    shared, original = f2d2.load(tmp_path / "shared"), load_model(tmp_path / "unet.pt")
    x, s, t = torch.randn(3, 1, 8, 8), torch.rand(3), torch.rand(3)
    out, ref = shared(x, s, t), original(x, s, t)
    assert shared.data_shape == (1, 8, 8) and torch.equal(out.u, ref.u) and torch.equal(out.d, ref.d)
