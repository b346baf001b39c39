"""Untrusted and damaged checkpoints: refused with clear errors, nothing of them runs; training falls back
to the previous checkpoint, which is kept until the next one is completely written."""

from __future__ import annotations

import json
import random

import pytest
import torch

from f2d2.cli import main
from f2d2.config.resolve import resolve_run
from f2d2.io import checkpoint as ckpt_mod
from f2d2.io.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    load_checkpoint,
    load_model,
    previous_path,
    warm_start,
)
from f2d2.nets import build_model
from f2d2.training.loop import train


def tiny_run(steps: int, hidden: int = 16) -> dict:
    return resolve_run(
        {
            "seed": 1,
            "model": {"arch": "mlp", "hidden": hidden, "depth": 2, "time_freqs": 2},
            "train": {"steps": steps, "batch_size": 32, "warmup": 2, "log_every": 5, "ckpt_every": 10},
        }
    )


class Payload:
    """Unpickling this would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("ckpt")
    train(tiny_run(20), work / "run", progress=False)
    return work / "run"


def test_previous_checkpoint_is_kept_beside_the_latest(trained):
    assert load_checkpoint(trained / "checkpoint.pt")["step"] == 20
    assert load_checkpoint(previous_path(trained / "checkpoint.pt"))["step"] == 10
    assert {p.name for p in trained.iterdir()} == {
        "checkpoint.pt",
        "checkpoint.prev.pt",
        "config.yaml",
        "metrics.jsonl",
        "train.lock",  # who trains here (f2d2.training.lock); its lock went with the process
    }


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty"])
def test_damaged_checkpoint_is_named_in_the_error(trained, tmp_path, damage):
    data = (trained / "checkpoint.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    damaged = {"truncated": data[: len(data) // 2], "random bytes": random.Random(0).randbytes(4096), "empty": b""}
    bad.write_bytes(damaged[damage])
    with pytest.raises(CheckpointError, match=rf"checkpoint {bad} is (truncated or )?corrupt"):
        load_checkpoint(bad)


def test_pickle_payload_is_refused_and_never_runs(trained, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    good = load_checkpoint(trained / "checkpoint.pt")
    torch.save({**good, "extra": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"refused as unsafe: it asks to load io\.open.*nothing of the file"):
        load_checkpoint(evil)
    pts = tmp_path / "pts.csv"
    pts.write_text("0.1,0.2\n")
    assert (
        main(["nll", "--checkpoint", str(evil), "--points", str(pts), "--steps", "1", "--out", str(tmp_path / "o.csv")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused as unsafe" in err and str(evil) in err
    with pytest.raises(CheckpointError, match="refused as unsafe"):
        warm_start(build_model(good["config"]["model"]), evil)
    assert not marker.exists()
    assert not (tmp_path / "o.csv").exists()


def test_cli_reports_a_truncated_checkpoint_in_one_line(trained, tmp_path, capsys):
    cut = tmp_path / "cut.pt"
    data = (trained / "checkpoint.pt").read_bytes()
    cut.write_bytes(data[:1000])
    assert main(["sample", "--checkpoint", str(cut), "--n", "4", "--steps", "1", "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("f2d2 sample: error: checkpoint") and "truncated or corrupt" in err and err.count("\n") == 1


def test_checkpoint_of_another_architecture_lists_the_keys(trained, tmp_path):
    wider = build_model({**tiny_run(1, hidden=24)["model"], "dim": 2})
    with pytest.raises(CheckpointError) as err:
        warm_start(wider, trained / "checkpoint.pt")
    msg = str(err.value)
    assert (
        "shape mismatches ['trunk.0.bias', 'trunk.0.weight', 'trunk.2.bias', 'trunk.2.weight', 'u_head.weight']" in msg
        and "model.*" in msg
    )
    # A file whose weights do not fit the architecture it records
    ckpt = load_checkpoint(trained / "checkpoint.pt")
    ckpt["config"]["model"]["hidden"] = 24
    lying = tmp_path / "lying.pt"
    torch.save(ckpt, lying)
    with pytest.raises(
        CheckpointError,
        match=r"does not fit the architecture it records: missing keys \[\], "
        r"unexpected keys \[\], shape mismatches \['trunk.0.bias', 'trunk.0.weight'",
    ):
        load_model(lying)


def _states(path):
    c = load_checkpoint(path)
    return c["step"], c["model"], c["ema"]


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path):
    full = train(tiny_run(30), tmp_path / "full", progress=False)
    work = tmp_path / "cut"
    train(tiny_run(20), work, progress=False)
    latest = work / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:500])  # step 20 damaged; step 10 kept
    warning = rf"{latest} is truncated or corrupt.*resuming from .*prev\.pt \(step 10\)"
    with pytest.warns(CheckpointWarning, match=warning):
        resumed = train(tiny_run(30), work, progress=False)
    (sa, ma, ea), (sb, mb, eb) = _states(full), _states(resumed)
    assert sa == sb == 30
    assert all(torch.equal(ma[k], mb[k]) for k in ma) and all(torch.equal(ea[k], eb[k]) for k in ea)
    rows = [json.loads(line)["step"] for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert rows == [5, 10, 15, 20, 25, 30]


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    work = tmp_path / "w"
    train(tiny_run(20), work, progress=False)
    for p in (work / "checkpoint.pt", work / "checkpoint.prev.pt"):
        p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint to resume from.*Delete"):
        train(tiny_run(30), work, progress=False)


def test_a_save_cut_short_leaves_the_old_checkpoints(tmp_path, monkeypatch):
    work = tmp_path / "w"
    train(tiny_run(20), work, progress=False)
    before = {p.name: p.read_bytes() for p in work.glob("checkpoint*.pt")}

    def dying_save(obj, f):  # save_checkpoint hands torch.save an open file
        f.write(b"half a checkpoint")
        f.flush()
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt_mod.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_run(30), work, progress=False)
    assert {p.name: p.read_bytes() for p in work.glob("checkpoint*.pt")} == before
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_resume_drops_a_log_line_the_kill_cut_short_and_stale_temporaries(tmp_path):
    work = tmp_path / "w"
    train(tiny_run(10), work, progress=False)
    with open(work / "metrics.jsonl", "a") as log:
        log.write('{"step": 11, "lr": 0.0')  # killed mid-write
    (work / ".checkpoint.pt.abc123.tmp.pt").write_bytes(b"half")  # killed mid-save
    train(tiny_run(20), work, progress=False)
    assert [json.loads(line)["step"] for line in (work / "metrics.jsonl").read_text().splitlines()] == [5, 10, 15, 20]
    assert not (work / ".checkpoint.pt.abc123.tmp.pt").exists()


def test_fourier_point_features_are_saved_and_drawn_from_a_fixed_seed(tmp_path):
    run = tiny_run(10)
    run["model"].update(x_freqs=8, x_scale=3.0)
    ckpt = train(run, tmp_path / "run", progress=False)
    model = load_model(ckpt)
    fresh = build_model({**run["model"], "x_freqs": 8, "x_scale": 3.0})
    assert model.points.W.shape == (2, 8) and torch.equal(model.points.W, fresh.points.W)
    assert torch.equal(model.points.W, torch.randn(2, 8, generator=torch.Generator().manual_seed(0)) * 3.0)
    x, s = torch.randn(5, 2), torch.rand(5)
    assert not torch.allclose(model(x, s, s).u, fresh(x, s, s).u)  # trained weights, same features
    plain = build_model({k: v for k, v in run["model"].items() if k not in ("x_freqs", "x_scale")})
    assert plain.points is None and not any("points" in k for k in plain.state_dict())
    with pytest.raises(ValueError, match="x_scale = -1"):
        build_model({**run["model"], "x_freqs": 4, "x_scale": -1})
