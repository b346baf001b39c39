"""Self-normalised importance sampling (f2d2.eval.importance): closed-form cases, a target that is 0 off its support,
the refusals, the checkerboard's truths, `f2d2 importance` on a tiny trained teacher (the checkerboard and a
user's function as the target), the gather script of its table and bench/importance.py at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import pytest
import torch

import f2d2
from analytic import GaussianFlow
from f2d2.cli import main
from f2d2.data import Checkerboard
from f2d2.eval.importance import Target, checkerboard_target, log_weights, sampler_log_density, snis
from pipeline_helpers import ROOT, load_bench, train_default_teacher

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_p(x: torch.Tensor) -> torch.Tensor:
    """An unnormalised N(0, I) in 2D: Z = 2 pi; the user's function of the CLI test."""
    return -0.5 * x.double().square().sum(1)


def right_half_log_p(x: torch.Tensor) -> torch.Tensor:
    """N(0, I) cut to x1 > 0, unnormalised: -inf on the left half, Z = pi."""
    return standard_normal_log_p(x).masked_fill(x[:, 0] <= 0, -math.inf)


def normal_log_q(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x.double() - mu).square().sum(1) - LOG_2PI


def test_proposal_equal_to_the_target_gives_ess_one_and_the_exact_log_z():
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = snis(x, normal_log_q(x, torch.zeros(2)), Target("normal", standard_normal_log_p, LOG_2PI))
    assert out["ess_per_sample"] == pytest.approx(1.0, abs=1e-12)
    assert out["log_z_estimate"] == pytest.approx(LOG_2PI, abs=1e-12) and out["log_z_abs_err"] < 1e-12
    assert out["support_share"] == 1.0
    assert out["expectations"]["sq_norm"]["estimate"] == pytest.approx(float(x.square().sum(1).mean()))
    assert out["expectations"]["sq_norm"]["true"] is None and out["expectations"]["x1x2"]["abs_err"] is None


def test_shifted_gaussian_proposal_has_ess_exp_minus_mu_squared():
    """q = N(mu, I), p = N(0, I): E_q[w^2] / E_q[w]^2 = exp(|mu|^2), so ESS / N -> exp(-|mu|^2)."""
    mu = torch.tensor([0.3, 0.4], dtype=torch.float64)  # |mu|^2 = 0.25
    n = 400_000
    x = mu + torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    truths = {"sq_norm": 2.0, "x1x2": 0.0}
    out = snis(x, normal_log_q(x, mu), Target("normal", standard_normal_log_p, LOG_2PI, truths))
    assert out["ess_per_sample"] == pytest.approx(math.exp(-0.25), abs=0.005)
    assert out["log_z_abs_err"] < 0.01
    assert out["expectations"]["sq_norm"]["abs_err"] < 0.02 and out["expectations"]["x1x2"]["abs_err"] < 0.01


def test_samples_off_the_support_weigh_zero():
    """log p~ = -inf on the left half: those samples get weight 0 and still count in N; Z = pi."""
    x = torch.randn(200_000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    log_q = normal_log_q(x, torch.zeros(2))
    lw = log_weights(x, log_q, right_half_log_p)
    assert torch.equal(lw.isneginf(), x[:, 0] <= 0)
    out = snis(x, log_q, Target("half", right_half_log_p, math.log(math.pi)))
    share = float((x[:, 0] > 0).double().mean())
    assert out["support_share"] == share
    assert out["ess_per_sample"] == pytest.approx(share, abs=1e-12)  # equal weights on the support
    assert out["log_z_estimate"] == pytest.approx(math.log(math.pi) + math.log(2 * share), abs=1e-12)
    # E_p[x1] = sqrt(2 / pi) on the half-normal: the SNIS mean of the right half
    w = torch.softmax(lw, 0)
    assert float((w * x[:, 0]).sum()) == pytest.approx(math.sqrt(2 / math.pi), abs=0.01)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x, lq, lp: (x[:, :1], lq, lp), r"samples x have shape \(10, 1\); expected points \(N >= 1, d >= 2\)"),
        (lambda x, lq, lp: (x, lq[:5], lp), r"log q has shape \(5,\); expected one value per sample, \(10,\)"),
        (
            lambda x, lq, lp: (x, lq.index_fill(0, torch.tensor([3]), math.nan), lp),
            "log q is not finite at 1 of 10 samples",
        ),
        (lambda x, lq, lp: (x, lq, lambda y: lp(y)[:, None]), r"log p~ returned shape \(10, 1\)"),
        (lambda x, lq, lp: (x, lq, lambda y: 3.0), "log p~ returned shape float"),
        (
            lambda x, lq, lp: (x, lq, lambda y: lp(y).index_fill(0, torch.tensor([4]), math.nan)),
            r"log p~ is NaN or \+inf at 1 of 10 samples \(first: sample 4\)",
        ),
        (
            lambda x, lq, lp: (x, lq, lambda y: lp(y).index_fill(0, torch.tensor([2]), math.inf)),
            r"log p~ is NaN or \+inf at 1 of 10 samples \(first: sample 2\)",
        ),
        (lambda x, lq, lp: (x, lq, lambda y: torch.full((len(y),), -math.inf)), "-inf at all 10 samples"),
    ],
)
def test_bad_input_is_refused_by_name(change, message):
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(3))
    x, log_q, log_p = change(x, normal_log_q(x, torch.zeros(2)), standard_normal_log_p)
    with pytest.raises(ValueError, match=message):
        snis(x, log_q, Target("t", log_p))


@pytest.mark.parametrize("scale", [2.0, 0.5])
def test_checkerboard_truths_match_its_own_draws(scale):
    """Z = 8 scale^2, E|x|^2 = 8 scale^2 / 3, E[x1 x2] = scale^2 / 4; exact draws as the proposal give ESS 1."""
    data = Checkerboard(scale)
    target = checkerboard_target(scale)
    x = data.sample(400_000, torch.Generator().manual_seed(4)).double()
    assert target.log_z == pytest.approx(math.log(8 * scale**2))
    assert float(x.square().sum(1).mean()) == pytest.approx(target.expectations["sq_norm"], rel=0.01)
    assert float((x[:, 0] * x[:, 1]).mean()) == pytest.approx(target.expectations["x1x2"], abs=0.01 * scale**2)
    out = snis(x, data.log_prob(x), target)
    assert out["ess_per_sample"] == pytest.approx(1.0) and out["log_z_abs_err"] < 1e-9
    off = torch.tensor([[0.5 * scale, -0.5 * scale], [5.0 * scale, 0.0]])  # an off-square cell, outside the board
    assert checkerboard_target(scale).log_p(off).isneginf().all()


def test_sampler_density_is_the_change_of_variables_of_the_k_step_map():
    """The exact Gaussian flow map x1 = mu + sigma x0: the sampler's density is N(mu, sigma^2 I) at every K, and the
    map folds nowhere; a random MLP's one-step density matches log N(x0) - log|det| of a finite-difference Jacobian."""
    model = GaussianFlow([1.0, -0.5], 0.6)
    x0 = torch.randn(300, 2, generator=torch.Generator().manual_seed(2))
    for k in (1, 3):
        log_q, folded = sampler_log_density(model, x0, k)
        x1 = f2d2.sample(model, x0, k)
        assert (log_q - model.log_prob_data(x1).double()).abs().max() < 1e-4 and not folded.any()
    torch.manual_seed(0)
    mlp = f2d2.nets.MLPFlowMap(dim=2, hidden=16, depth=2, time_freqs=2).double()
    z = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    log_q, _ = sampler_log_density(mlp, z, 1)
    eps, cols = 1e-6, []
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = eps
        cols.append((f2d2.sample(mlp, z + e, 1) - f2d2.sample(mlp, z - e, 1)) / (2 * eps))
    jac = torch.stack(cols, dim=2)
    expected = -0.5 * z.square().sum(1) - LOG_2PI - torch.linalg.slogdet(jac)[1]
    assert torch.allclose(log_q, expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"noise x0 has shape \(4,\); expected points"):
        sampler_log_density(model, torch.zeros(4), 1)


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    work = tmp_path_factory.mktemp("importance") / "train" / "teacher"
    tiny = ["model.hidden=32", "model.depth=2", "train.steps=20", "train.warmup=5", "train.batch_size=128"]
    assert train_default_teacher(work, *tiny, "train.log_every=10", "train.ckpt_every=10") == 0
    return work / "checkpoint.pt"


def _cell(tmp_path, capsys, *args) -> dict:
    out = tmp_path / f"cell{len(list(tmp_path.glob('*.json')))}.json"
    assert main(["importance", *args, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    return printed


def test_cli_cell_is_snis_of_f2d2_sample(teacher, tmp_path, capsys):
    """The cell's numbers are snis of f2d2.sample's samples and log q with the same seed; the reference too."""
    cell = _cell(tmp_path, capsys, "--checkpoint", str(teacher), "--n", "300", "--steps", "2", "--seed", "5")
    x, log_q = f2d2.sample(str(teacher), 300, 2, log_prob=True, generator=torch.Generator().manual_seed(5))
    expected = snis(x, log_q, checkerboard_target(2.0))
    for key in ("ess_per_sample", "log_z_estimate", "log_z_true", "log_z_abs_err", "support_share", "expectations"):
        assert cell[key] == expected[key], key
    assert cell["log_z_true"] == pytest.approx(math.log(32))
    assert cell["expectations"]["sq_norm"]["true"] == pytest.approx(32 / 3)
    assert (cell["n"], cell["seed"], cell["steps"], cell["solver"], cell["div"]) == (300, 5, 2, "2-step", "exact")
    assert cell["train_seed"] == 0 and cell["checkpoint"] == str(teacher) and cell["seconds"] > 0
    assert cell["target"] == "checkerboard (scale 2)"

    ref = _cell(tmp_path, capsys, "--checkpoint", str(teacher), "--n", "50", "--reference")
    assert ref["solver"] == "dopri5" and ref["steps"] is None and 0 < ref["ess_per_sample"] <= 1
    assert cell["log_prob_from"] == ref["log_prob_from"] == "noise"
    args = ["--checkpoint", str(teacher), "--n", "300", "--steps", "2", "--seed", "5", "--log-prob-from", "sample"]
    back = _cell(tmp_path, capsys, *args)
    x, log_q = f2d2.sample(
        str(teacher), 300, 2, log_prob=True, log_prob_from="sample", generator=torch.Generator().manual_seed(5)
    )
    assert back["log_prob_from"] == "sample"
    assert (
        back["ess_per_sample"] == snis(x, log_q, checkerboard_target(2.0))["ess_per_sample"] != cell["ess_per_sample"]
    )


def test_an_eval_bundle_writes_the_same_cells(teacher, tmp_path, capsys):
    """`f2d2 eval --cell 'importance ...'` (the pipeline's job per run) writes what `f2d2 importance` writes."""
    alone = _cell(tmp_path, capsys, "--checkpoint", str(teacher), "--n", "100", "--steps", "1", "--seed", "3")
    record = tmp_path / "record.json"
    cells = ["importance --n 100 --steps 1 --seed 3 --out b1.json", "importance --n 30 --reference --out bref.json"]
    args = ["eval", "--checkpoint", str(teacher), "--record", str(record)]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert main([*args, *(a for c in cells for a in ("--cell", c))]) == 0
    bundled = json.loads((tmp_path / "b1.json").read_text())
    assert {**bundled, "seconds": 0} == {**alone, "seconds": 0}
    assert json.loads((tmp_path / "bref.json").read_text())["solver"] == "dopri5"
    assert [c["command"] for c in json.loads(record.read_text())["cells"]] == ["importance", "importance"]


def test_cli_takes_a_users_function_as_the_target(teacher, tmp_path, capsys):
    fn = "test_importance:standard_normal_log_p"
    cell = _cell(tmp_path, capsys, "--checkpoint", str(teacher), "--n", "200", "--steps", "1", "--target-fn", fn)
    x, log_q = f2d2.sample(str(teacher), 200, 1, log_prob=True, generator=torch.Generator().manual_seed(0))
    assert cell["ess_per_sample"] == snis(x, log_q, Target(fn, standard_normal_log_p))["ess_per_sample"]
    assert cell["target"] == fn and cell["log_z_true"] is None and cell["log_z_abs_err"] is None
    assert cell["expectations"]["x1x2"]["true"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "1", "--target-fn", "no_such_module:f"], "--target-fn = 'no_such_module:f': no module named"),
        (["--steps", "1", "--target-fn", "test_importance:nothing"], "has no attribute 'nothing'"),
        (["--steps", "1", "--target-fn", "test_importance"], "expected 'package.module:function'"),
        (["--steps", "1", "--div", "head"], "--div head"),
    ],
)
def test_cli_refuses_bad_input_by_name(teacher, tmp_path, capsys, args, message):
    out = tmp_path / "cell.json"
    assert main(["importance", "--checkpoint", str(teacher), "--n", "10", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_cli_refuses_an_out_that_is_not_json(teacher, tmp_path, capsys):
    args = ["--checkpoint", str(teacher), "--n", "10", "--steps", "1", "--out", str(tmp_path / "c.csv")]
    assert main(["importance", *args]) == 2 and "the importance cell is a .json file" in capsys.readouterr().err


# ---------------------------------------------------------------- the table and the bench


def test_table_rows_and_ratios_to_the_reference(teacher, tmp_path, capsys):
    script = ROOT / "workflow" / "scripts" / "table_importance.py"
    spec = importlib.util.spec_from_file_location("gather_table_importance", script)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    k1 = _cell(tmp_path, capsys, "--checkpoint", str(teacher), "--n", "100", "--steps", "1")
    ref = _cell(tmp_path, capsys, "--checkpoint", str(teacher), "--n", "100", "--reference")
    _cell(tmp_path, capsys, "--checkpoint", str(teacher), "--n", "100", "--steps", "1", "--log-prob-from", "sample")
    paths = sorted(str(p) for p in tmp_path.glob("cell*.json"))
    df = table.main(
        paths, [("teacher", "K1"), ("teacher", "reference"), ("teacher", "K1_sample")], "teacher",
        "config/config.yaml", str(tmp_path / "t.csv"), labels={"teacher": "Flow Matching"},
    )  # fmt: skip
    assert list(df["proposal"]) == ["K=1", "reference", "K=1"] and list(df["method"]) == ["Flow Matching"] * 3
    assert list(df["log_prob_from"]) == ["noise", "noise", "sample"]
    assert df["ess_vs_reference"][0] == pytest.approx(k1["ess_per_sample"] / ref["ess_per_sample"])
    assert df["seconds_vs_reference"][0] == pytest.approx(k1["seconds"] / ref["seconds"])
    assert df["log_z_abs_err"][1] == ref["log_z_abs_err"] and list(df["seed"]) == [0, 0, 0]


def test_bench_prints_every_proposal_and_the_verdict(teacher, tmp_path, capsys):
    """bench/importance.py on a results folder: the teacher stands in as the one F2D2 run here."""
    results = teacher.parents[2]
    shutil.copytree(teacher.parent, results / "train" / "mine", dirs_exist_ok=True)
    out = tmp_path / "bench.json"
    args = ["--results", str(results), "--runs", "mine", "--steps", "1", "2", "--n", "64", "--check-log-q"]
    assert load_bench("importance").main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [(r["run"], r["proposal"], r["log_prob_from"]) for r in result["rows"]] == [
        (run, f"K={k}", how) for run in ("mine", "teacher") for k in (1, 2) for how in ("noise", "sample")
    ] + [("teacher", "reference", "noise")]
    assert "mine K=1 (log q from the sample), n=64: ESS/N" in printed
    for r in result["rows"]:
        assert (
            f"{r['run']:22s} {r['proposal']:9s} {r['log_prob_from']:6s} {r['n']:6d} {r['ess_per_sample']:6.4f}"
            in printed
        )
        assert r["log_q_vs_reference_abs_err"] >= 0 and 0 <= r["ess_with_reference_log_p"] <= 1
        assert (r["ess_with_sampler_density"] is None) == (r["proposal"] == "reference")
    assert result["rows"][-1]["log_q_vs_reference_abs_err"] < 1e-2  # the reference's own log q
    assert "mine K=1 (log q from the noise), n=64: ESS/N" in printed and "target " in printed
