"""The speed-accuracy frontier (f2d2.eval.frontier, `f2d2 frontier`, bench/frontier.py): fixed-grid solves of the
joint ODE, the peer (flow_matching's ODESolver) against f2d2's own integrators on a closed-form Gaussian flow, the
Pareto marking and the verdicts on hand-made points, and the bench and the pipeline's frontier job at tiny size."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

from analytic import GaussianFlow
from f2d2.cli.main import main
from f2d2.core.likelihood import reference_log_likelihood
from f2d2.eval import frontier
from f2d2.eval.frontier import Solve
from pipeline_helpers import load_bench

MU, SIGMA = [1.0, -0.5], 0.5


@pytest.fixture(scope="module")
def flow():
    return GaussianFlow(MU, SIGMA, flow_map=False)


@pytest.fixture(scope="module")
def points():
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.3


def test_pareto_marks_the_points_nothing_beats():
    points = [(1.0, 5.0), (2.0, 1.0), (2.0, 3.0), (0.5, 9.0), (3.0, 1.0), (1.0, 5.0), (4.0, 0.5)]
    # (2, 3) loses to (2, 1); (3, 1) to (2, 1); the two (1, 5) tie and neither is strictly beaten
    assert frontier.pareto(points) == [True, True, False, True, False, True, True]
    assert frontier.pareto([]) == []


@pytest.mark.parametrize(
    "solver, steps, tol",
    [("euler", 4, None), ("midpoint", 2, None), ("rk4", 1, None), ("rk4", 4, None), ("dopri5", None, 1e-5)],
)
@pytest.mark.parametrize("div", ["exact", "hutchinson"])
def test_the_peer_and_f2d2_agree_on_a_gaussian_flow(flow, points, solver, steps, tol, div):
    """Same method, same grid: flow_matching's ODESolver and f2d2's integrators give the same log p and NFE (the
    velocity is linear in x, so one Rademacher probe gives the exact trace and the probes cannot differ)."""
    ours = frontier.likelihood(Solve("t", solver, div, steps=steps, tol=tol), flow, points)
    peer = frontier.likelihood(Solve("t", solver, div, steps=steps, tol=tol, impl="flow_matching"), flow, points)
    assert torch.allclose(ours.log_prob, peer.log_prob, atol=1e-4, rtol=1e-5)
    assert ours.nfe == peer.nfe
    if steps is not None:
        assert ours.nfe == Solve("t", solver, div, steps=steps).nfe_per_point


def test_fixed_grid_solves_converge_at_their_order(points):
    """Against the closed form: halving the step divides midpoint's error by ~4 and RK4's by ~16."""
    flow, x = GaussianFlow(MU, SIGMA, flow_map=False).double(), points.double()
    truth = flow.log_prob_data(x)

    def error(method, steps):
        got = reference_log_likelihood(flow, x, method=method, steps=steps).log_prob
        return float((got - truth).abs().mean())

    for method, order in (("midpoint", 2), ("rk4", 4)):
        ratio = error(method, 8) / error(method, 16)
        assert 2 ** (order - 0.5) < ratio < 2 ** (order + 0.5), (method, ratio)


@pytest.mark.parametrize(
    "method, steps, message",
    [
        ("rk5", 4, "ODE solver 'rk5' is unknown"),
        ("rk4", None, "solver 'rk4' is fixed-grid: it needs steps = an integer >= 1, got None"),
        ("midpoint", 0, "got 0"),
        ("dopri5", 8, "solver 'dopri5' is adaptive (atol, rtol): steps must be None, got 8"),
    ],
)
def test_a_bad_solver_is_refused_by_name(flow, points, method, steps, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        reference_log_likelihood(flow, points, method=method, steps=steps)


def _row(run, solver, seconds, error, steps=None, tol=None, impl="f2d2", div="exact"):
    solve = Solve(run, solver, "head" if solver == "flow map" else div, steps=steps, tol=tol, impl=impl)
    return {**dataclasses.asdict(solve), "name": solve.name, "seconds": seconds, "error_nats": error, "nfe": 1}


def test_verdicts_name_what_beats_f2d2_and_the_speedup():
    rows = [
        _row("map", "flow map", 0.01, 0.5, steps=1),
        _row("map", "flow map", 0.08, 0.2, steps=8),
        _row("teacher", "rk4", 0.05, 0.1, steps=2),  # beats K = 8: faster and more accurate
        _row("teacher", "midpoint", 0.2, 0.4, steps=2),  # as accurate as K = 1 and the cheapest such: 20x
        _row("teacher", "dopri5", 1.0, 0.001, tol=1e-5),
        _row("teacher", "dopri5", 1.5, 0.001, tol=1e-5, impl="flow_matching"),
    ]
    rows[3]["seconds"] = 0.2
    rows[4]["round_seconds"] = [1.0] * 9
    rows[5]["round_seconds"] = [1.5] * 8 + [0.5]  # one round slower than f2d2: the median and interval hold
    v = frontier.verdicts(rows, "teacher", speedup=10)
    assert [f["met"] for f in v["front"]] == [True, False]  # no teacher solve takes 0.01 s or less
    assert v["front"][1]["beaten_by"] == ["teacher rk4 2 exact"]
    (k1,) = v["speedup"]
    assert k1["cheapest"] == "teacher rk4 2 exact" and k1["ratio"] == pytest.approx(5.0) and not k1["met"]
    (peer,) = v["peer"]
    assert peer["ratio"] == pytest.approx(1.5) and peer["low"] == pytest.approx(1.5) and peer["met"]
    assert peer["verdict"] == "faster"
    assert any("beaten by ['teacher rk4 2 exact']" in line for line in v["lines"])


@pytest.mark.parametrize(
    "peer, verdict, met",
    [([1.02, 0.97, 1.05, 0.99, 1.01, 1.03, 0.96, 1.04, 1.0], "a tie", True), ([0.8] * 8 + [1.3], "slower", False)],
)
def test_the_peer_verdict_reads_the_paired_rounds(peer, verdict, met):
    rows = [
        _row("teacher", "dopri5", 1.0, 0.0, tol=1e-3),
        _row("teacher", "dopri5", 1.0, 0.0, tol=1e-3, impl="flow_matching"),
    ]
    rows[0]["round_seconds"], rows[1]["round_seconds"] = [1.0] * len(peer), peer
    (v,) = frontier.verdicts(rows, "teacher")["peer"]
    assert (v["verdict"], v["met"]) == (verdict, met)
    assert v["low"] <= v["ratio"] <= v["high"]


@pytest.mark.parametrize("n, k", [(5, 1), (6, 1), (9, 2), (15, 4), (20, 6)])
def test_median_interval_takes_the_order_statistics_of_95_percent_coverage(n, k):
    values = [float(v) for v in range(n, 0, -1)]  # unsorted on purpose
    median, low, high = frontier.median_interval(values)
    assert median == pytest.approx((n + 1) / 2) and (low, high) == (k, n + 1 - k)
    # the coverage of [v_(k), v_(n+1-k)] reaches 0.95 (at n >= 6) and that of the next narrower one does not
    cover = [1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n for j in (k, k + 1)]
    assert (cover[0] >= 0.95 or k == 1) and (cover[1] < 0.95 or k + 1 > (n + 1) // 2)


def test_twins_are_timed_in_alternating_rounds():
    calls = []
    fns = tuple(lambda name=name: calls.append(name) or name for name in "ab")
    results, times = frontier.timed_twins(fns, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"] and results == ["a", "b"]
    assert [len(t) for t in times] == [3, 3] and all(s >= 0 for t in times for s in t)
    with pytest.raises(ValueError, match=r"rounds = 0; expected >= 1"):
        frontier.timed_twins(fns, 0)


def test_measure_scores_against_the_reference_and_marks_the_front(flow, points):
    truth = -flow.log_prob_data(points).double()
    solves = frontier.teacher_solves("t", euler=[2], midpoint=[2], rk4=[], tols=[1e-5], divs=["exact"], impls=["f2d2"])
    rows = frontier.measure(solves, {"t": flow}, points, truth)
    assert [r["name"] for r in rows] == ["t euler 2 exact", "t midpoint 2 exact", "t dopri5 1e-05 exact"]
    assert rows[0]["error_nats"] > rows[1]["error_nats"] > rows[2]["error_nats"] and rows[2]["error_nats"] < 1e-3
    assert [r["pareto"] for r in rows] == frontier.pareto([(r["seconds"], r["error_nats"]) for r in rows])
    with pytest.raises(ValueError, match=r"reference_nll has 3 values; the points are 64"):
        frontier.measure(solves, {"t": flow}, points, truth[:3])
    with pytest.raises(ValueError, match=r"solves of \['t'\], which are not among the models \['u'\]"):
        frontier.measure(solves, {"u": flow}, points, truth)


def test_measure_times_each_adaptive_solve_with_its_peer_in_rounds(flow, points):
    truth = -flow.log_prob_data(points).double()
    solves = frontier.teacher_solves("t", euler=[1], midpoint=[], rk4=[], tols=[1e-3], divs=["exact"])
    rows = frontier.measure(solves, {"t": flow}, points, truth, paired_rounds=3)
    assert [("round_seconds" in r) for r in rows] == [False, False, True, True]  # euler alone, dopri5 twins paired
    for r in rows[2:]:
        assert len(r["round_seconds"]) == 3 and r["seconds"] == min(r["round_seconds"])
    (peer,) = frontier.verdicts(rows, "t")["peer"]
    assert peer["low"] <= peer["ratio"] <= peer["high"]


def test_the_one_step_speedup_is_timed_again_beside_its_matched_teacher_solve(flow, points, monkeypatch):
    models = {"map": GaussianFlow(MU, SIGMA), "t": flow}
    truth = -flow.log_prob_data(points).double()
    solves = frontier.f2d2_solves(["map"], [1, 2]) + frontier.teacher_solves(
        "t", euler=[2, 16], midpoint=[], rk4=[], tols=[], divs=["exact"], impls=["f2d2"]
    )
    rows = frontier.measure(solves, models, points, truth)
    k1, k2, coarse, fine = rows
    assert coarse["error_nats"] > fine["error_nats"]
    k1["error_nats"] = fine["error_nats"]  # K = 1 made as wrong as 16 Euler steps: its match, not 2 steps
    before = {r["name"]: r["seconds"] for r in rows}
    timed_solves = []
    real = frontier.solve_all
    monkeypatch.setattr(frontier, "solve_all", lambda solve, *a: timed_solves.append(solve.name) or real(solve, *a))
    frontier.retime_speedups(rows, models, points, "t", rounds=3)
    assert timed_solves == ["map K=1 head", "t euler 16 exact"]
    assert k1["seconds"] <= before[k1["name"]] and fine["seconds"] <= before[fine["name"]]
    assert (k2["seconds"], coarse["seconds"]) == (before[k2["name"]], before[coarse["name"]])
    assert [r["pareto"] for r in rows] == frontier.pareto([(r["seconds"], r["error_nats"]) for r in rows])


# ---------------------------------------------------------------- the pipeline's job and the bench


SMALL = ["--euler", "1", "2", "--midpoint", "1", "--rk4", "1", "--tols", "0.01", "--divs", "exact", "hutchinson"]


def _expected_names(runs, steps, impls=("f2d2", "flow_matching")):
    """The rows in order: the F2D2 runs, then each teacher solve with its implementations side by side."""
    names = [f"{run} K={k} head" for run in runs for k in steps]
    for div in ("exact", "hutchinson"):
        for h in ("euler 1", "euler 2", "midpoint 1", "rk4 1", "dopri5 0.01"):
            names += [f"teacher {h} {div}" + (" (flow_matching)" if i == "flow_matching" else "") for i in impls]
    return names


def test_the_pipelines_frontier_job_scores_every_solve(pipeline):
    _, _, out = pipeline
    folder = out / "eval" / "frontier"
    record = json.loads((folder / "frontier.json").read_text())
    runs = ["shortcut_f2d2", "shortcut_distill_f2d2", "meanflow_f2d2"]
    assert [r["name"] for r in record["rows"]] == _expected_names(runs, [1, 2])
    assert record["n"] == 50 and record["dim"] == 2 and record["reference"]["probes"] == 0
    table = pd.read_csv(folder / "frontier.csv")
    assert list(table["name"]) == [r["name"] for r in record["rows"]]
    assert (table["error_nats"] >= 0).all() and (table["seconds"] > 0).all() and table["pareto"].any()
    assert table["pareto"].tolist() == frontier.pareto(list(zip(table["seconds"], table["error_nats"])))
    assert len(record["verdicts"]["front"]) == 6 and len(record["verdicts"]["speedup"]) == 3
    assert (folder / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_prints_every_row_and_the_targets(pipeline, tmp_path, capsys):
    tmp, config, out = pipeline
    args = ["--config", str(config), "--results", str(out), "--runs", "shortcut_distill_f2d2", "--steps", "1"]
    assert load_bench("frontier").main([*args, "--n", "20", *SMALL, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "frontier.json").read_text())
    names = _expected_names(["shortcut_distill_f2d2"], [1])
    assert [r["name"] for r in record["rows"]] == names
    for r in record["rows"]:
        assert f"{r['name']:48s} {r['nfe']:5d} {r['seconds']:9.4f}" in printed
        assert math.isfinite(r["error_nats"])
    assert "speed-up: shortcut_distill_f2d2 K=1 head: the cheapest teacher solve as accurate is" in printed
    assert printed.count("own vs peer: dopri5 0.01") == 2 and record["command"]


def test_the_command_refuses_bad_input_by_name(tmp_path, capsys):
    base = ["frontier", "--points", str(tmp_path / "p.npy"), "--out", str(tmp_path / "o")]
    assert main([*base, "--teacher", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt not found; expected an f2d2 checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # the parser's own refusal
        main([*base, "--teacher", str(tmp_path), "--run", "nopath"])
    assert exit_.value.code == 2
    assert "argument --run: 'nopath'; expected NAME=PATH" in capsys.readouterr().err
    assert main([*base, "--teacher", str(tmp_path), "--run", f"a={tmp_path}", "--run", f"a={tmp_path}"]) == 2
    assert "run names given twice: ['a']" in capsys.readouterr().err
