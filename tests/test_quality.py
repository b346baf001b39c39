"""Sample quality (f2d2.eval.frechet, f2d2.eval.quality, `f2d2 quality`): the fast Frechet distance against
clean-fid's, paired bootstrap intervals, the study's cells, its cache and its records, on tiny image runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from f2d2.cli import main
from f2d2.eval import frechet
from f2d2.eval.quality import Sampler, plan


def _features(n: int, dim: int, shift: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + shift


def test_frechet_distance_equals_clean_fids_and_grows_with_a_shift():
    from cleanfid.fid import frechet_distance

    ref = frechet.FrechetReference.of_features(_features(300, 32, 0.0, 0))
    for shift in (0.0, 0.5):
        feats = _features(80, 32, shift, 1)  # n > F and, below, n < F: both sides of the rank of S
        ours = frechet.FrechetSamples(feats, ref).fid()
        theirs = frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), ref.mu, ref.sigma)
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-6)
    few = _features(20, 32, 0.0, 2)
    theirs = frechet_distance(few.mean(0), np.cov(few, rowvar=False), ref.mu, ref.sigma)
    assert frechet.FrechetSamples(few, ref).fid() == pytest.approx(theirs, rel=1e-5)
    near, far = _features(80, 32, 0.0, 1), _features(80, 32, 0.5, 1)  # the same covariance, the mean moved
    moved = np.sum((far.mean(0) - ref.mu) ** 2) - np.sum((near.mean(0) - ref.mu) ** 2)
    assert moved > 1
    fids = [frechet.FrechetSamples(f, ref).fid() for f in (near, far)]
    assert fids[1] - fids[0] == pytest.approx(moved)
    with pytest.raises(ValueError, match=r"\(n >= 2, 32\)"):
        frechet.FrechetSamples(np.zeros((5, 31)), ref)


def test_bootstrap_resamples_are_shared_so_a_paired_difference_is_narrower():
    ref = frechet.FrechetReference.of_features(_features(300, 16, 0.0, 0))
    a = _features(60, 16, 0.2, 5)
    b = a + np.random.default_rng(9).normal(size=a.shape) * 0.05  # b: a moved a little, point by point
    idx = frechet.bootstrap_indices(60, 30, seed=4)
    assert idx.shape == (30, 60) and np.array_equal(idx, frechet.bootstrap_indices(60, 30, seed=4))
    ra = frechet.bootstrap(frechet.FrechetSamples(a, ref), idx)
    rb = frechet.bootstrap(frechet.FrechetSamples(b, ref), idx)
    assert np.std(rb - ra) < 0.5 * min(np.std(ra), np.std(rb))
    spread = frechet.interval(1.0, ra)
    assert spread["lo"] < 1.0 < spread["hi"] and spread["reps"] == 30
    assert spread["hi"] - spread["lo"] == pytest.approx(2 * 1.96 * np.std(ra, ddof=1))


def test_plan_pairs_every_guided_cell_with_its_twin_and_groups_a_smaller_sweep():
    cells = plan(
        "t", ["b"], ["f"], n=100, steps=[1, 2], euler=64, lr_one_step=0.1, lr_multi_step=0.05, adam=1,
        sweep_run="f", sweep_steps=2, sweep_lrs=(0.05, 0.2), sweep_adam=(1,), sweep_n=40,
    )  # fmt: skip
    names = [c.name for c in cells]
    assert names == [
        "t/dopri5", "t/K64", "t/K1", "t/K2", "b/K1", "f/K1", "f/K1_g1x0.1", "f/K2", "f/K2_g1x0.05",
        "sweep/f/K2", "sweep/f/K2_g1x0.05", "sweep/f/K2_g1x0.2",
    ]  # fmt: skip
    for c in cells:
        if c.guided:
            assert c.twin in cells and cells.index(c.twin) < cells.index(c)
    same_n = plan("t", [], ["f"], n=100, steps=[2], euler=8, lr_one_step=0.1, lr_multi_step=0.05, adam=1,
                  sweep_run="f", sweep_steps=2, sweep_lrs=(0.05,), sweep_adam=(1,))  # fmt: skip
    assert [c.name for c in same_n] == ["t/dopri5", "t/K8", "t/K2", "f/K2", "f/K2_g1x0.05"]  # the sweep: main cells
    assert Sampler("f", None, 10).solver == "dopri5" and Sampler("f", 4, 10).solver == "4-step"


DATA = {"name": "shapes", "size": 8, "n_train": 60, "n_test": 40}
UNET = {"arch": "unet", "channels": 8, "channel_mult": [1, 2], "attn_resolutions": [4], "num_res_blocks": 1}
TRAIN = {"steps": 2, "batch_size": 8, "warmup": 1, "log_every": 1, "ckpt_every": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-step flow-matching teacher and a 2-step Shortcut-F2D2 run from it on 8x8 shapes."""
    d = tmp_path_factory.mktemp("quality")
    teacher = {"seed": 0, "data": DATA, "model": UNET, "objective": {"name": "flow_matching"}, "train": TRAIN}
    (d / "t.yaml").write_text(yaml.safe_dump(teacher))
    assert main(["train", "--config", str(d / "t.yaml"), "--workdir", str(d / "t"), "--no-progress"]) == 0
    ckpt = str(d / "t" / "checkpoint.pt")
    f2d2 = {
        **teacher,
        "model": {**UNET, "div_head": True, "div_hidden": [8, 8]},
        "objective": {"name": "shortcut_f2d2", "teacher": ckpt, "div_method": "hutchinson"},
        "train": {**TRAIN, "init_from": ckpt, "ema_decay": 0.0},
    }
    (d / "f.yaml").write_text(yaml.safe_dump(f2d2))
    assert main(["train", "--config", str(d / "f.yaml"), "--workdir", str(d / "f"), "--no-progress"]) == 0
    return d


def _quality(d, *extra):
    return main(
        [
            "quality", "--config", str(d / "t.yaml"), "--teacher", f"teacher={d}/t/checkpoint.pt",
            "--baseline", f"map={d}/t/checkpoint.pt", "--run", f"f={d}/f/checkpoint.pt", "--out", str(d / "q"),
            "--n", "12", "--n-reference", "16", "--reps", "4", "--euler", "4", "--extractor", "tiny-conv",
            "--bpd-tol", "1e-2", *extra,
        ]
    )  # fmt: skip


def test_quality_scores_every_cell_pairs_guidance_and_reuses_its_cache(runs, capsys):
    d = runs
    assert _quality(d, "--sweep-run", "f", "--sweep-n", "8", "--sweep-lrs", "0.1", "--sweep-adam", "2") == 0
    record = json.loads((d / "q" / "quality.json").read_text())
    rows = {r["name"]: r for r in record["rows"]}
    assert list(rows) == [
        "data/held_out", "teacher/dopri5", "teacher/K4", "teacher/K1", "teacher/K2", "map/K1", "f/K1", "f/K1_g1x0.1",
        "f/K2", "f/K2_g1x0.05",
        "sweep/f/K2", "sweep/f/K2_g2x0.1",
    ]  # fmt: skip
    assert record["network"]["source"].startswith("tiny-conv") and record["extractor"] == "tiny-conv"
    for r in rows.values():
        assert np.isfinite(r["fid"]) and r["lo"] < r["fid"] < r["hi"] and np.isfinite(r["teacher_bpd"])
    for name in ("f/K1_g1x0.1", "f/K2_g1x0.05", "sweep/f/K2_g2x0.1"):
        g = rows[name]
        twin = rows[name.rsplit("_g", 1)[0]]
        assert g["delta"] == pytest.approx(g["fid"] - twin["fid"]) and g["delta_lo"] < g["delta"] < g["delta_hi"]
        assert g["one_step_loglik_after"] > g["one_step_loglik_before"] == twin["one_step_loglik_before"]
        assert g["moved_rms"] > 0 and g["noise_moved_rms"] > 0
    assert rows["f/K2"]["nfe"] == 2 and rows["f/K2_g1x0.05"]["nfe"] == 4 and rows["teacher/dopri5"]["nfe"] is None
    assert [v["target"].split(":")[0] for v in record["verdicts"]] == [
        "f/K1_g1x0.1",
        "f/K2_g1x0.05",
        "2-step guided f at or below the 4-step teacher's FID",
    ]  # noqa: E501
    assert "(teacher K4)" in record["verdicts"][-1]["value"] and "sweep/" not in record["verdicts"][-1]["value"]
    csv = (d / "q" / "quality.csv").read_text().splitlines()
    assert csv[0].startswith("name,group,run,solver") and len(csv) == 1 + len(rows)
    assert (d / "q" / "quality.png").stat().st_size > 10_000
    # a rerun computes nothing: every cell (features, replicates, JSON) comes from the cache
    stamps = {p: p.stat().st_mtime_ns for p in (d / "q" / "cells").rglob("*.*")}
    capsys.readouterr()
    assert _quality(d, "--sweep-run", "f", "--sweep-n", "8", "--sweep-lrs", "0.1", "--sweep-adam", "2") == 0
    assert {p: p.stat().st_mtime_ns for p in (d / "q" / "cells").rglob("*.*")} == stamps
    # another number of replicates redoes the cells' bootstrap, not the reference
    assert _quality(d, "--reps", "5", "--no-teacher-bpd") == 0
    again = json.loads((d / "q" / "quality.json").read_text())
    assert all(r["reps"] == 5 for r in again["rows"]) and "teacher_bpd" not in again["rows"][1]
    assert (d / "q" / "cells" / "reference.npz").stat().st_mtime_ns == stamps[d / "q" / "cells" / "reference.npz"]
    # a run retrained in place (same path, other weights) is scored again; the other runs' cells are not
    stamps = {p: p.stat().st_mtime_ns for p in (d / "q" / "cells").rglob("*.npz")}
    ckpt = torch.load(d / "f" / "checkpoint.pt", weights_only=False)
    for state in (ckpt["model"], ckpt["ema"]):
        for value in state.values():
            if value.is_floating_point():
                value.add_(0.01)
    torch.save(ckpt, d / "f" / "checkpoint.pt")
    assert _quality(d, "--reps", "5", "--no-teacher-bpd") == 0
    redone = {p.name for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert redone == {"K1.npz", "K1_g1x0.1.npz", "K2.npz", "K2_g1x0.05.npz"}, redone
    assert all(p.parent.name == "f" for p, t in stamps.items() if p.stat().st_mtime_ns != t)


def test_quality_refuses_a_sweep_run_that_is_no_f2d2_run_before_any_work(runs, capsys):
    d = runs
    capsys.readouterr()
    assert _quality(d, "--sweep-run", "map") == 2
    err = capsys.readouterr().err
    assert "--sweep-run 'map' is not one of the F2D2 --run names ['f']" in err
    assert _quality(d, "--n", "30") == 2  # 16 + 30 > the 40 held-out images
    assert "n_reference 16 + n 30 held-out images requested; the test split has 40" in capsys.readouterr().err
