"""OOD detection (f2d2.eval.ood): AUROC on hand-made scores, the compressor's bits per dimension, and bench/ood.py
end to end on tiny trained patches runs."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
import yaml

from f2d2.cli import main
from f2d2.core.likelihood import log_likelihood, standard_normal_log_prob
from f2d2.data.patches import CHECK_PHOTOS, DEFAULT_PHOTOS, OOD_PHOTOS, Patches
from f2d2.eval import bpd
from f2d2.eval.ood import auroc, complexity_corrected, complexity_tilt, compressed_bits_per_dim
from f2d2.io.checkpoint import load_model
from pipeline_helpers import ROOT, load_bench


@pytest.mark.parametrize(
    "inside, outside, expected",
    [
        ([0.1, 0.2, 0.3], [0.5, 0.9], 1.0),  # perfect separation
        ([0.5, 0.9], [0.1, 0.2, 0.3], 0.0),  # reversed
        ([1.0, 1.0, 1.0], [1.0, 1.0], 0.5),  # all tied
        ([1.0, 2.0, 3.0], [1.5, 2.0, 4.0], 5.5 / 9),  # out wins 1 + 1.5 (a tie) + 3 of 9 pairs
        ([0, 1, 2, 3], [2], 2.5 / 4),  # one tie among four
    ],
)
def test_auroc_of_hand_made_scores(inside, outside, expected):
    assert auroc(np.array(inside), torch.tensor(outside)) == pytest.approx(expected, abs=1e-12)


def test_auroc_matches_the_pair_count_on_random_tied_scores():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.integers(1, 6, 30).astype(float)
    pairs = (b[None, :] > a[:, None]).mean() + 0.5 * (b[None, :] == a[:, None]).mean()
    assert auroc(a, b) == pytest.approx(pairs, abs=1e-12)


@pytest.mark.parametrize(
    "inside, outside, words",
    [
        ([], [1.0], ["in_scores", "non-empty 1-D"]),
        ([[1.0, 2.0]], [1.0], ["in_scores", "(1, 2)"]),
        ([1.0], [float("nan")], ["out_scores", "non-finite"]),
        ([1.0], ["a"], ["out_scores", "numbers"]),
    ],
)
def test_auroc_refuses_bad_scores_by_name(inside, outside, words):
    with pytest.raises(ValueError) as e:
        auroc(inside, outside)
    assert all(w in str(e.value) for w in words)


def test_compressed_bits_per_dim_ranks_flat_below_noise_and_counts_zlib_bytes():
    flat = torch.full((1, 3, 8, 8), 128, dtype=torch.uint8)
    noise = torch.randint(0, 256, (1, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    pixels = torch.cat([flat, noise])
    for compressor in ("png", "zlib"):
        bits = compressed_bits_per_dim(pixels, compressor)
        assert bits.dtype == torch.float64 and bits.shape == (2,) and bits[0] < bits[1]
    raw = noise[0].permute(1, 2, 0).contiguous().numpy().tobytes()
    assert compressed_bits_per_dim(noise, "zlib")[0] == 8 * len(zlib.compress(raw, 9)) / 192
    s = complexity_corrected(torch.tensor([3.0, 5.0]), pixels, "zlib")
    assert torch.equal(s, torch.tensor([3.0, 5.0], dtype=torch.float64) - compressed_bits_per_dim(pixels, "zlib"))


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda p: compressed_bits_per_dim(p, "gzip"), ["compressor = 'gzip'", "png"]),
        (lambda p: compressed_bits_per_dim(p.float()), ["pixels is torch.float32", "uint8"]),
        (lambda p: compressed_bits_per_dim(p[:, :1]), ["(2, 1, 8, 8)", "(B >= 1, 3, H, W)"]),
        (lambda p: compressed_bits_per_dim(p[:0]), ["(0, 3, 8, 8)"]),
        (lambda p: complexity_corrected([1.0], p), ["bpd has 1 scores", "pixels 2 images"]),
    ],
)
def test_compressor_refuses_bad_input_by_name(call, words):
    pixels = torch.zeros((2, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError) as e:
        call(pixels)
    assert all(w in str(e.value) for w in words)


def test_complexity_tilt_of_hand_made_errors():
    c = np.arange(12.0)  # quarters: 0, 1, 2 and 9, 10, 11
    tilt = complexity_tilt(0.5 - 0.1 * c, c)
    assert tilt["corr"] == pytest.approx(-1.0)
    assert tilt["simplest"] == pytest.approx(0.4) and tilt["most_complex"] == pytest.approx(-0.5)
    flat = complexity_tilt(np.full(12, 0.3), c[::-1])  # an offset, no tilt
    assert flat == pytest.approx({"corr": 0.0, "simplest": 0.3, "most_complex": 0.3})
    noise = np.random.default_rng(0).normal(size=4000)
    assert abs(complexity_tilt(noise, np.random.default_rng(1).normal(size=4000))["corr"]) < 0.1


@pytest.mark.parametrize(
    "error, complexity, words",
    [
        (np.zeros(8), np.zeros(9), "error has 8 and complexity 9 values"),
        (np.zeros(7), np.zeros(7), "expected the same number, >= 8"),
        ([0.0] * 7 + [float("nan")], np.zeros(8), "error has 1 non-finite"),
    ],
)
def test_complexity_tilt_refuses_bad_input_by_name(error, complexity, words):
    with pytest.raises(ValueError, match=words):
        complexity_tilt(error, complexity)


STAGES = ("teacher", "shortcut", "shortcut_f2d2")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """config/patches.yaml's teacher, Shortcut and Shortcut-F2D2 at a few steps of a tiny U-Net (a loose reference
    tolerance: the exact divergence's solve costs 192 backward passes per step)."""
    d = tmp_path_factory.mktemp("ood")
    cfg = yaml.safe_load((ROOT / "config" / "patches.yaml").read_text())
    cfg["outdir"] = str(d / "results")
    cfg["data"].update(n_train=64, n_test=40)
    cfg["model"].update(channels=8)
    cfg["train"].update(steps=3, batch_size=8, warmup=1, log_every=1, ckpt_every=3)
    cfg["stages"] = {s: cfg["stages"][s] for s in STAGES}
    for stage in cfg["stages"].values():
        stage.get("train", {}).pop("steps", None)
        stage.get("train", {}).pop("early_stop", None)
    cfg.pop("ablations")
    cfg["eval"]["reference"].update(atol=1e-2, rtol=1e-2)
    path = d / "tiny-patches.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    for stage in STAGES:
        work = d / "results" / "train" / stage
        assert main(["train", "--config", str(path), "--stage", stage, "--workdir", str(work), "--no-progress"]) == 0
    return d, path


def test_bench_scores_every_model_and_writes_every_row(tiny_runs, capsys):
    d, config = tiny_runs
    bench = load_bench("ood")
    out = d / "ood"
    assert bench.main(["--config", str(config), "--n", "12", "--exact-n", "2", "--out", str(out)]) == 0
    res = json.loads((out / "ood.json").read_text())
    methods = {(r["run"], r["method"]) for r in res["rows"]}
    assert methods == {
        ("teacher", "K=1 Euler (hutchinson)"),
        ("shortcut", "K=1 Euler (hutchinson)"),
        ("shortcut_f2d2", "F2D2 K=1 (head)"),
        ("teacher", "reference dopri5 (hutchinson)"),
        ("teacher", "reference dopri5 (exact) subset"),
        ("-", "png bits/dim alone"),
    }
    assert res["n_in"] == res["n_out"] == 12 and res["per_patch"]["source"].count("test") == 12
    assert {s for s in res["per_patch"]["source"] if s != "test"} == set(OOD_PHOTOS)
    for r in res["rows"]:
        assert np.isfinite([r["bpd_in"], r["bpd_out"]]).all(), r
        assert 0 <= r["auroc"] <= 1 and 0 <= r["auroc_subset"] <= 1, r
        assert set(r["auroc_by_source"]) == set(OOD_PHOTOS)
        if r["run"] != "-":
            assert r["seconds"] > 0 and r["nfe"] > 0 and 0 <= r["auroc_corrected"] <= 1, r
            assert r["n"] == (4 if r["method"].endswith("subset") else 24)
            assert np.isfinite([r["shift_in"], r["shift_out"], r["err_vs_exact_subset"]]).all(), r
    (t,) = res["target"]
    assert t["run"] == "shortcut_f2d2" and isinstance(t["met"], bool) and t["speedup"] > 0
    # the tilt of the head's held-out error, from the per-patch scores the bench wrote
    per = res["per_patch"]
    held = np.array(per["source"]) == "test"
    err = np.array(per["shortcut_f2d2 F2D2 K=1 (head)"]) - np.array(per["teacher reference dopri5 (hutchinson)"])
    assert t["tilt"] == pytest.approx(complexity_tilt(err[held], np.array(per["png bits/dim"])[held]))
    assert -1 <= t["tilt"]["corr"] <= 1 and t["tilt"]["simplest"] != t["tilt"]["most_complex"]
    low, high = t["difference_95"]
    assert -1 <= low <= high <= 1 and t["auroc_gap"] == abs(t["auroc_difference"])
    # per photo: the head's AUROC against the reference's on the held-out patches and that photo, and its BPD shift
    rows = {(r["run"], r["method"]): r for r in res["rows"]}
    head, ref = rows[("shortcut_f2d2", "F2D2 K=1 (head)")], rows[("teacher", "reference dopri5 (hutchinson)")]
    source = np.array(per["source"])
    head_bpd, ref_bpd = (
        np.array(per["shortcut_f2d2 F2D2 K=1 (head)"]),
        np.array(per["teacher reference dopri5 (hutchinson)"]),
    )
    for photo in OOD_PHOTOS:
        on = (source == "test") | (source == photo)
        want = auroc(head_bpd[on & held], head_bpd[on & ~held]) - auroc(ref_bpd[on & held], ref_bpd[on & ~held])
        assert t["auroc_difference_by_source"][photo] == pytest.approx(want)
        assert head["shift_by_source"][photo] == pytest.approx(err[source == photo].mean())
    assert head["shift_by_source"]["test"] == pytest.approx(head["shift_in"]) and ref["shift_by_source"]["retina"] == 0
    # the prior part: -log N(x0) / (d ln 2) of the point the head's one step reaches, recomputed here
    pixels, _, photos = bench.patch_sets(res["data"], 12, 0, list(OOD_PHOTOS))
    z = bpd.dequantize(pixels, torch.Generator().manual_seed(0))
    model = load_model(d / "results" / "train" / "shortcut_f2d2" / "checkpoint.pt")
    x0 = log_likelihood(model, z, 1, div="head").x0
    prior = -standard_normal_log_prob(x0).double().numpy() / (z[0].numel() * np.log(2))
    assert np.allclose(per["shortcut_f2d2 F2D2 K=1 (head) prior"], prior, rtol=1e-5)
    ref_prior = np.array(per["teacher reference dopri5 (hutchinson) prior"])
    for photo in OOD_PHOTOS:
        want = (prior - ref_prior)[source == photo].mean()
        assert head["prior_shift_by_source"][photo] == pytest.approx(want)
    assert set(ref["prior_shift_by_source"].values()) == {0.0}
    # each held-out patch's own photo: cut from that photo's test region, and the head's mean shift per photo
    photo = np.array(per["photo"])
    assert photos == per["photo"] and list(photo[~held]) == list(source[~held])
    assert set(photo[held]) <= set(DEFAULT_PHOTOS) and len(set(photo[held])) > 1
    for name in set(photo[held]):
        own = Patches(size=res["data"]["size"], images=[name]).test_pixels().flatten(1)
        assert all((own == patch.flatten()).all(1).any() for patch in pixels[:12][photo[:12] == name])
        assert head["shift_by_photo"][name] == pytest.approx(err[photo == name].mean())
    assert head["shift_by_photo"]["retina"] == pytest.approx(head["shift_by_source"]["retina"])
    assert set(res["checkpoints"]) == set(STAGES) and res["seed"] == 0 and res["threads"] == 1
    assert (out / "ood.csv").read_text().count("\n") == 1 + len(res["rows"])
    assert (out / "scores.csv").read_text().count("\n") == 1 + 24
    assert len(res["per_patch"]) == 3 + 2 * 5 and len(res["per_patch"]["png bits/dim"]) == 24
    table = capsys.readouterr().out
    assert "target shortcut_f2d2: AUROC gap" in table and "reference dopri5 (exact) subset" in table
    assert "held-out BPD - reference against png bits/dim: correlation" in table
    assert "per photo, AUROC - the reference's: hubble" in table
    assert "of that shift, the prior at the point reached at t = 0: test" in table
    assert "held-out patches by their (training) photo, BPD - the reference's: " in table


def test_bench_runs_scores_only_the_named_stages_and_the_reference(tiny_runs):
    d, config = tiny_runs
    bench = load_bench("ood")
    out = d / "ood-runs"
    assert (
        bench.main(
            ["--config", str(config), "--n", "6", "--exact-n", "0", "--runs", "shortcut_f2d2", "--out", str(out)]
        )
        == 0
    )
    res = json.loads((out / "ood.json").read_text())
    assert {(r["run"], r["method"]) for r in res["rows"]} == {
        ("shortcut_f2d2", "F2D2 K=1 (head)"),
        ("teacher", "reference dopri5 (hutchinson)"),
        ("-", "png bits/dim alone"),
    }
    assert set(res["checkpoints"]) == {"teacher", "shortcut_f2d2"} and [t["run"] for t in res["target"]] == [
        "shortcut_f2d2"
    ]
    with pytest.raises(SystemExit, match=r"--runs \['shortcut_f3d3'\]: not stages of the config; expected some of"):
        bench.main(["--config", str(config), "--runs", "shortcut_f3d3", "--out", str(out)])


def test_bench_own_reference_scores_each_f2d2_run_s_own_flow(tiny_runs, capsys):
    d, config = tiny_runs
    bench = load_bench("ood")
    out = d / "ood-own"
    assert (
        bench.main(["--config", str(config), "--n", "6", "--exact-n", "0", "--own-reference", "--out", str(out)]) == 0
    )
    res = json.loads((out / "ood.json").read_text())
    rows = {(r["run"], r["method"]): r for r in res["rows"]}
    own = rows[("shortcut_f2d2", "own flow dopri5 (hutchinson)")]
    teacher = rows[("teacher", "reference dopri5 (hutchinson)")]
    head = rows[("shortcut_f2d2", "F2D2 K=1 (head)")]
    assert own["nfe"] > 1 and 0 <= own["auroc"] <= 1
    assert ("teacher", "own flow dopri5 (hutchinson)") not in rows  # only runs with a divergence head
    # the own flow is another network's density than the teacher's: other per-patch values
    scores = res["per_patch"]
    assert not np.allclose(
        scores["shortcut_f2d2 own flow dopri5 (hutchinson)"], scores["teacher reference dopri5 (hutchinson)"]
    )
    (t,) = res["target"]
    assert t["own_auroc_difference"] == pytest.approx(head["auroc"] - own["auroc"])
    assert t["auroc_difference"] == pytest.approx(head["auroc"] - teacher["auroc"])
    low, high = t["own_difference_95"]
    assert -1 <= low <= high <= 1 and t["own_speedup"] > 0
    assert "against its own flow: AUROC difference" in capsys.readouterr().out


def test_bench_refuses_runs_that_trained_on_an_ood_photo(tiny_runs):
    bench = load_bench("ood")
    data = {"name": "patches", "size": 8, "images": ["astronaut", "retina"]}
    with pytest.raises(SystemExit, match=r"data.images include \['retina'\]"):
        bench.patch_sets(data, 4, 0, list(OOD_PHOTOS))
    with pytest.raises(SystemExit, match=r"data.images include \['china'\]"):
        bench.patch_sets({**data, "images": ["china"]}, 4, 0, list(CHECK_PHOTOS))
    with pytest.raises(SystemExit, match="--n 100000: expected 1 .."):
        bench.patch_sets({"name": "patches", "size": 8}, 100000, 0, list(OOD_PHOTOS))


def test_bench_scores_the_check_photos_when_asked(tiny_runs, capsys):
    d, config = tiny_runs
    bench = load_bench("ood")
    out = d / "ood-check"
    argv = ["--config", str(config), "--n", "8", "--exact-n", "0", "--runs", "shortcut_f2d2", "--out", str(out)]
    assert bench.main([*argv, "--ood-photos", *CHECK_PHOTOS]) == 0
    res = json.loads((out / "ood.json").read_text())
    assert list(res["sources"]) == list(CHECK_PHOTOS) and res["sources"]["china"] == ["scikit-learn", "china.jpg"]
    assert [s for s in res["per_patch"]["source"] if s != "test"] == ["china"] * 4 + ["flower"] * 4
    (t,) = res["target"]
    assert set(t["auroc_difference_by_source"]) == set(CHECK_PHOTOS)
    assert "china" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main([*argv, "--ood-photos", "moon"])
    assert "invalid choice: 'moon'" in capsys.readouterr().err
