"""The f2d2 command line end to end on a tiny run, and its handling of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from f2d2.cli import main
from f2d2.cli.parser import build_parser
from f2d2.io.arrays import read_nll
from pipeline_helpers import train_default_teacher

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--set",
    "model.hidden=32",
    "--set",
    "model.depth=2",
    "--set",
    "train.steps=20",
    "--set",
    "train.warmup=5",
    "--set",
    "train.ema_halflife_steps=4",
    "--set",
    "train.batch_size=128",
    "--set",
    "train.log_every=10",
    "--set",
    "train.ckpt_every=10",
]


def test_every_option_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == {
        "train",
        "nll",
        "sample",
        "importance",
        "eval",
        "frontier",
        "quality",
        "data",
        "submit",
        "fid-reference",
        "import-meanflow",
        "objectives",
        "export",
    }
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help and len(action.help) > 10, (name, action.dest)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    cfg = str(ROOT / "config" / "config.yaml")
    assert (
        main(
            ["train", "--config", cfg, "--stage", "teacher", "--workdir", str(work / "teacher"), "--no-progress", *TINY]
        )
        == 0
    )
    assert main(["data", "--config", cfg, "--n", "300", "--seed", "7", "--out", str(work / "pts.npy")]) == 0
    return work


def test_nll_reference_and_euler_outputs(trained, capsys):
    w = trained
    ckpt, pts = str(w / "teacher" / "checkpoint.pt"), str(w / "pts.npy")
    capsys.readouterr()
    assert main(["nll", "--checkpoint", ckpt, "--points", pts, "--reference", "--out", str(w / "ref.csv")]) == 0
    ref_summary = json.loads(capsys.readouterr().out)
    assert (
        main(
            [
                "nll",
                "--checkpoint",
                ckpt,
                "--points",
                pts,
                "--steps",
                "2",
                "--compare",
                str(w / "ref.csv"),
                "--out",
                str(w / "k2.csv"),
                "--summary",
                str(w / "k2.json"),
            ]
        )
        == 0
    )
    k2_summary = json.loads((w / "k2.json").read_text())

    header = (w / "ref.csv").read_text().splitlines()[0].split(",")
    assert header == ["nll_nats", "bpd", "analytic_nll_nats"]
    ref = np.loadtxt(w / "ref.csv", delimiter=",", skiprows=1)
    k2 = np.loadtxt(w / "k2.csv", delimiter=",", skiprows=1)
    assert ref.shape == k2.shape == (300, 3)
    assert np.isfinite(ref).all() and np.isfinite(k2).all()
    assert np.allclose(ref[:, 1], ref[:, 0] / (2 * np.log(2)), rtol=1e-6)  # bpd column
    assert np.allclose(ref[:, 2], np.log(32))  # checkerboard points: analytic NLL = log 32
    assert ref_summary["mean_nll_nats"] == pytest.approx(ref[:, 0].mean(), rel=1e-6)
    assert ref_summary["solver"] == "dopri5" and ref_summary["div"] == "exact" and ref_summary["nfe"] > 10
    assert k2_summary["nfe"] == 2 and k2_summary["div"] == "exact"
    assert k2_summary["mean_abs_err_nats"] == pytest.approx(np.abs(k2[:, 0] - ref[:, 0]).mean(), rel=1e-5)
    assert k2_summary["mean_abs_err_nats"] > 0


def test_sample_writes_requested_points(trained):
    out = trained / "samples.csv"
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(trained / "teacher" / "checkpoint.pt"),
                "--n",
                "50",
                "--steps",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    arr = np.loadtxt(out, delimiter=",", skiprows=1)
    assert arr.shape == (50, 2) and np.isfinite(arr).all() and arr.std() > 0.1


def test_reference_sample_matches_many_steps(trained, tmp_path):
    ckpt = str(trained / "teacher" / "checkpoint.pt")
    outs = {}
    for how in (["--reference"], ["--steps", "200"], ["--steps", "1"]):
        out = tmp_path / f"s{len(outs)}.npy"
        assert main(["sample", "--checkpoint", ckpt, "--n", "200", *how, "--out", str(out)]) == 0
        outs[how[-1]] = np.load(out)
    # the adaptive solve and 200 Euler steps from the same noise end close; one Euler step does not
    assert np.abs(outs["--reference"] - outs["200"]).mean() < 0.3 * np.abs(outs["--reference"] - outs["1"]).mean()


@pytest.mark.parametrize("how", [["--steps", "3"], ["--reference"]])
def test_sample_log_prob_is_written_beside_the_samples_as_the_api_returns_it(trained, tmp_path, capsys, how):
    import torch

    import f2d2

    ckpt = trained / "teacher" / "checkpoint.pt"
    plain, with_lq = tmp_path / "plain.csv", tmp_path / "s.csv"
    base = ["sample", "--checkpoint", str(ckpt), "--n", "40", "--seed", "3", *how, "--batch-size", "16"]
    assert main([*base, "--out", str(plain)]) == 0
    assert not (tmp_path / "plain.log_prob.csv").exists()
    capsys.readouterr()
    assert main([*base, "--out", str(with_lq), "--log-prob"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["div"] == "exact" and summary["log_prob_out"] == str(tmp_path / "s.log_prob.csv")
    lines = (tmp_path / "s.log_prob.csv").read_text().splitlines()
    assert lines[0] == "log_prob_nats" and len(lines) == 41
    log_q = np.loadtxt(tmp_path / "s.log_prob.csv", skiprows=1)
    x1 = np.loadtxt(with_lq, delimiter=",", skiprows=1)
    steps = None if how == ["--reference"] else 3
    gen = torch.Generator().manual_seed(3)
    x_api, lq_api = f2d2.sample(ckpt, 40, steps, log_prob=True, generator=gen, batch_size=16)
    assert np.allclose(x1, x_api.numpy(), rtol=1e-6, atol=1e-6) and np.allclose(log_q, lq_api.numpy(), atol=1e-5)
    assert summary["mean_log_prob_nats"] == pytest.approx(log_q.mean(), rel=1e-6)
    if steps is not None:  # Euler steps of the joint ODE move the points as the plain Euler sampler does
        assert plain.read_bytes() == with_lq.read_bytes()
    code = main([*base, "--out", str(tmp_path / "d.npy"), "--div", "exact"])
    assert code == 2 and "--div exact chooses the divergence of --log-prob" in capsys.readouterr().err
    code = main([*base, "--out", str(tmp_path / "d.npy"), "--log-prob", "--div", "head"])
    assert code == 2 and "this one has none" in capsys.readouterr().err
    code = main([*base, "--out", str(tmp_path / "d.npy"), "--log-prob-from", "sample"])
    assert code == 2 and "--log-prob-from sample chooses how --log-prob is computed" in capsys.readouterr().err
    back = tmp_path / "b.csv"
    assert main([*base, "--out", str(back), "--log-prob", "--log-prob-from", "sample"]) == 0
    assert json.loads(capsys.readouterr().out)["log_prob_from"] == "sample"
    x_back = torch.from_numpy(np.loadtxt(back, delimiter=",", skiprows=1)).float()
    expected = f2d2.log_prob(ckpt, x_back, steps=steps, batch_size=16)  # the adaptive solve's steps are per batch
    assert np.allclose(np.loadtxt(tmp_path / "b.log_prob.csv", skiprows=1), expected.numpy(), atol=1e-4)


def test_sample_rejects_bad_tolerance_before_loading(tmp_path, capsys):
    code = main(
        [
            "sample",
            "--checkpoint",
            str(tmp_path / "missing.pt"),
            "--n",
            "5",
            "--reference",
            "--rtol",
            "-1",
            "--out",
            str(tmp_path / "s.npy"),
        ]
    )
    assert code == 2 and "rtol=-1" in capsys.readouterr().err


def test_nll_rejects_bad_points_file(trained, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 3)))
    code = main(
        [
            "nll",
            "--checkpoint",
            str(trained / "teacher" / "checkpoint.pt"),
            "--points",
            str(bad),
            "--steps",
            "1",
            "--out",
            str(tmp_path / "o.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "(N, 2)" in err
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(
    "last_row, problem",
    [("1.5,1.0", "ends mid-line"), ("1.5\n", "line 301 has 1 fields, the header 2")],
    ids=["cut mid-value", "last row short"],
)
def test_nll_refuses_a_half_written_compare_file_naming_it(trained, tmp_path, capsys, last_row, problem):
    """--compare of a per-point CSV that a killed f2d2 nll left half-written: one line naming the file, no NLL."""
    ref = tmp_path / "ref.csv"
    ref.write_text("nll_nats,bpd\n" + "1.5,1.08\n" * 299 + last_row)  # 300 rows, as many as the points
    code = main(
        [
            "nll",
            "--checkpoint",
            str(trained / "teacher" / "checkpoint.pt"),
            "--points",
            str(trained / "pts.npy"),
            "--steps",
            "1",
            "--compare",
            str(ref),
            "--out",
            str(tmp_path / "o.csv"),
        ]
    )
    assert code == 2 and capsys.readouterr().err == f"f2d2 nll: error: {ref} {problem}: a half-written file?\n"
    assert not (tmp_path / "o.csv").exists()


def test_a_per_point_file_without_an_nll_column_is_refused_naming_it(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("bpd,other\n1.0,2.0\n")
    with pytest.raises(ValueError, match=f"{path} has no nll_nats column \\(columns: \\['bpd', 'other'\\]\\)"):
        read_nll(path)
    path.write_text("nll_nats,bpd\n3.5,2.5\n")
    assert read_nll(path).tolist() == [3.5]


def test_nll_head_needs_a_divergence_head(trained, tmp_path, capsys):
    code = main(
        [
            "nll",
            "--checkpoint",
            str(trained / "teacher" / "checkpoint.pt"),
            "--points",
            str(trained / "pts.npy"),
            "--steps",
            "1",
            "--div",
            "head",
            "--out",
            str(tmp_path / "o.csv"),
        ]
    )
    assert code == 2 and "divergence head" in capsys.readouterr().err


def test_overrides_parse_numbers_yaml_reads_as_strings():
    from f2d2.config.resolve import apply_overrides

    cfg = apply_overrides({}, ["train.lr=3e-4", "model.arch=mlp", "train.grad_clip=null", "train.steps=5"])
    assert cfg == {"train": {"lr": 3e-4, "grad_clip": None, "steps": 5}, "model": {"arch": "mlp"}}


def test_stage_names_resolve_to_checkpoints():
    from f2d2.config.resolve import load_yaml, resolve_run, stage_dependencies

    cfg = load_yaml(ROOT / "config" / "config.yaml")
    run = resolve_run(cfg, "shortcut_distill_f2d2", stage_root="/runs")
    assert run["train"]["init_from"] == "/runs/shortcut_distill/checkpoint.pt"
    assert run["objective"]["teacher"] == "/runs/teacher/checkpoint.pt"
    assert run["model"]["div_head"] is True
    assert sorted(stage_dependencies(cfg, "shortcut_distill_f2d2")) == ["shortcut_distill", "teacher"]
    assert stage_dependencies(cfg, "teacher") == []


def test_train_rejects_bad_values_before_training(tmp_path, capsys):
    code = train_default_teacher(tmp_path / "w", "train.lr=-1")
    assert code == 2 and "train.lr = -1" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    code = main(
        ["train", "--config", str(ROOT / "config" / "config.yaml"), "--stage", "nope", "--workdir", str(tmp_path / "w")]
    )
    assert code == 2 and "'nope'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def f2d2_trained(trained):
    """An F2D2 checkpoint (divergence head) distilled from the tiny teacher."""
    cfg = str(ROOT / "config" / "config.yaml")
    for stage in ("shortcut_distill", "shortcut_distill_f2d2"):
        assert (
            main(
                ["train", "--config", cfg, "--stage", stage, "--workdir", str(trained / stage), "--no-progress", *TINY]
            )
            == 0
        )
    return trained / "shortcut_distill_f2d2" / "checkpoint.pt"


def test_f2d2_chain_trains_and_evaluates_from_the_cli(trained, f2d2_trained, capsys):
    ckpt = str(f2d2_trained)
    capsys.readouterr()
    for backward in ("two-way", "forward-only"):
        assert (
            main(
                [
                    "nll",
                    "--checkpoint",
                    ckpt,
                    "--points",
                    str(trained / "pts.npy"),
                    "--steps",
                    "1",
                    "--backward",
                    backward,
                    "--out",
                    str(trained / f"f2d2_{backward}.csv"),
                ]
            )
            == 0
        )
        summary = json.loads(capsys.readouterr().out)
        assert summary["div"] == "head" and summary["nfe"] == 1 and np.isfinite(summary["mean_nll_nats"])
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                ckpt,
                "--n",
                "40",
                "--steps",
                "1",
                "--guidance-steps",
                "1",
                "--guidance-lr",
                "0.1",
                "--out",
                str(trained / "guided.npy"),
            ]
        )
        == 0
    )
    plain = trained / "plain.npy"
    assert main(["sample", "--checkpoint", ckpt, "--n", "40", "--steps", "1", "--out", str(plain)]) == 0
    guided = np.load(trained / "guided.npy")
    assert guided.shape == (40, 2) and not np.allclose(guided, np.load(plain))


def test_eval_bundle_writes_what_the_separate_commands_write(trained, f2d2_trained, tmp_path):
    """One `f2d2 eval` of several cells: every file equals the one its own `f2d2 nll` / `f2d2 sample` writes,
    byte for byte (JSON summaries but for their own 'seconds'), and its record lists each cell's seconds."""
    pts = str(trained / "pts.npy")
    ref = tmp_path / "ref.csv"
    assert main(["nll", "--checkpoint", str(f2d2_trained), "--points", pts, "--reference", "--out", str(ref)]) == 0

    def cells(d):
        return [
            f"nll --points {pts} --steps 1 --compare {ref} --out {d}/n1.csv --summary {d}/n1.json",
            f"nll --points {pts} --steps 2 --div exact --out {d}/n2.csv --summary {d}/n2.json",
            f"sample --n 40 --steps 2 --seed 3 --out {d}/s2.npy --metrics {d}/s2.json",
            f"sample --n 40 --steps 1 --seed 3 --guidance-steps 1 --guidance-lr 0.1 --out {d}/g1.npy "
            f"--metrics {d}/g1.json",
            f"nll --points {pts} --steps 1 --batch-size 7 --out {d}/d1.csv",
        ]

    bundle, alone = tmp_path / "bundle", tmp_path / "alone"
    argv = ["eval", "--checkpoint", str(f2d2_trained), "--record", str(bundle / "record.json")]
    assert main([*argv, *(a for c in cells(bundle) for a in ("--cell", c))]) == 0
    for cell in cells(alone):
        kind, *rest = cell.split()
        assert main([kind, "--checkpoint", str(f2d2_trained), *rest]) == 0
    names = ["n1.csv", "n1.json", "n2.csv", "n2.json", "s2.npy", "s2.json", "g1.npy", "g1.json", "d1.csv"]
    assert sorted(p.name for p in alone.iterdir()) == sorted(names)
    for name in names:
        mine, theirs = (bundle / name).read_bytes(), (alone / name).read_bytes()
        if name.endswith(".json"):
            mine, theirs = json.loads(mine), json.loads(theirs)
            assert mine.pop("seconds") > 0 and theirs.pop("seconds") > 0
        assert mine == theirs, name
    record = json.loads((bundle / "record.json").read_text())
    assert [c["out"] for c in record["cells"]] == [
        str(bundle / n) for n in ("n1.csv", "n2.csv", "s2.npy", "g1.npy", "d1.csv")
    ]
    assert record["cells"][0]["seconds"] == json.loads((bundle / "n1.json").read_text())["seconds"]
    assert all(c["cell_seconds"] >= c["seconds"] for c in record["cells"])
    for key in ("seconds", "cell_seconds"):
        assert record[key] == pytest.approx(sum(c[key] for c in record["cells"]), abs=1e-3)


@pytest.mark.parametrize(
    "cell, expected",
    [
        ("nll --steps 1 --out o.csv", "the following arguments are required: --points"),
        ("sample --n 4 --steps 1 --device cuda --out o.npy", "give --device to f2d2 eval, not to a cell"),
        ("data --n 4", "does not start with one of nll, sample"),
    ],
)
def test_eval_rejects_bad_cells_when_parsed(cell, expected, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["eval", "--checkpoint", "c.pt", "--cell", cell])
    assert info.value.code == 2 and expected in capsys.readouterr().err


def test_atomic_writes_leave_readable_files_and_no_temporaries(tmp_path):
    import os
    import stat

    from f2d2.io.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
