"""The speed-accuracy frontier of a flow's likelihood: few-step F2D2 against the ODE solvers of its own teacher.

Every configuration computes log p_1(x) of the same points x (B, *shape) at t = 1 (data), integrated back to
t = 0 (noise): an F2D2 model's K flow-map steps with its divergence head, or the teacher's joint ODE with a
fixed-grid (Euler, midpoint, RK4) or adaptive (dopri5) solver and the exact or Hutchinson divergence, through
f2d2's own integrators or, as the peer, ``flow_matching``'s ``ODESolver.compute_likelihood``. Each is scored by
its mean per-point |NLL - reference NLL| in nats, its model evaluations (NFE) and its wall seconds, measured
side by side in one process; ``pareto`` marks the configurations no other beats in both seconds and error.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from f2d2.config.solvers import FIXED_GRID_SOLVERS
from f2d2.core.likelihood import (
    LikelihoodResult,
    log_likelihood,
    probe_averaged_solve,
    reference_log_likelihood,
    standard_normal_log_prob,
)
from f2d2.eval.metrics import nll_error
from f2d2.io.atomic import atomic_path, atomic_write_text
from f2d2.nets import FlowMapNet

IMPLEMENTATIONS = ("f2d2", "flow_matching")


@dataclass(frozen=True)
class Solve:
    """One way to compute a likelihood: ``run``'s model with ``solver`` "flow map" (K = ``steps`` flow-map steps,
    ``div`` "head") or a torchdiffeq method of the joint ODE (``steps`` for a fixed grid, ``tol`` = atol = rtol
    for an adaptive one), through ``impl`` f2d2 or flow_matching (the peer)."""

    run: str
    solver: str
    div: str
    steps: int | None = None
    tol: float | None = None
    impl: str = "f2d2"

    def __post_init__(self):
        if self.impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl = {self.impl!r}; expected one of {IMPLEMENTATIONS}")
        if self.solver == "flow map" and (self.impl != "f2d2" or self.steps is None):
            raise ValueError(f"{self}: a flow-map solve is f2d2's, with steps = K")

    @property
    def name(self) -> str:
        if self.solver == "flow map":
            how = f"K={self.steps}"
        else:
            how = f"{self.solver} {self.steps}" if self.steps is not None else f"{self.solver} {self.tol:g}"
        peer = " (flow_matching)" if self.impl == "flow_matching" else ""
        return f"{self.run} {how} {self.div}{peer}"

    @property
    def nfe_per_point(self) -> int | None:
        """Model evaluations of a fixed-cost solve (None for an adaptive one: counted when it runs)."""
        if self.solver == "flow map":
            return self.steps
        return None if self.steps is None else self.steps * FIXED_GRID_SOLVERS[self.solver]


def teacher_solves(
    run: str,
    *,
    euler: Iterable[int] = (1, 2, 4, 8, 16, 32, 64),
    midpoint: Iterable[int] = (1, 2, 4, 8, 16, 32),
    rk4: Iterable[int] = (1, 2, 4, 8, 16),
    tols: Iterable[float] = (1e-2, 1e-3, 1e-4, 1e-5),
    divs: Iterable[str] = ("exact", "hutchinson"),
    impls: Iterable[str] = IMPLEMENTATIONS,
) -> list[Solve]:
    """Every solve of the teacher ``run``'s joint ODE: each fixed-grid method at its step counts and dopri5 at each
    tolerance, with each divergence, through each implementation; the implementations of one solve side by side
    (timed one right after the other, so that a drift of the machine's speed does not fall between them)."""
    solves = []
    for div in divs:
        for solver, counts in (("euler", euler), ("midpoint", midpoint), ("rk4", rk4)):
            solves += [Solve(run, solver, div, steps=n, impl=impl) for n in counts for impl in impls]
        solves += [Solve(run, "dopri5", div, tol=tol, impl=impl) for tol in tols for impl in impls]
    return solves


def f2d2_solves(runs: Iterable[str], steps: Iterable[int] = (1, 2, 4, 8)) -> list[Solve]:
    """Each F2D2 run's K-step likelihood with its divergence head."""
    return [Solve(run, "flow map", "head", steps=k) for run in runs for k in steps]


def _peer_log_likelihood(model: FlowMapNet, x: torch.Tensor, solve: Solve, seed: int) -> LikelihoodResult:
    """``flow_matching``'s ODESolver.compute_likelihood on the velocity u(x, t, t) of ``model``, from x (B, *shape)
    at t = 1 to t = 0. The peer takes its exact divergence over the second axis of a flat (B, D) state, so the model
    sees x flattened; its Hutchinson probe comes from torch's global generator, seeded with ``seed``."""
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    shape, nfe = x.shape[1:], 0

    class Velocity(ModelWrapper):
        def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
            nonlocal nfe
            nfe += 1
            tt = t.expand(x.shape[0]).to(x.dtype)
            return model.velocity(x.reshape(-1, *shape), tt).reshape(x.shape[0], -1)

    torch.manual_seed(seed)
    step_size = None if solve.steps is None else 1.0 / solve.steps
    tol = solve.tol if solve.tol is not None else 1e-5  # unused by a fixed grid
    _, log_p = ODESolver(Velocity(model)).compute_likelihood(
        x.reshape(x.shape[0], -1),
        standard_normal_log_prob,
        step_size,
        method=solve.solver,
        atol=tol,
        rtol=tol,
        time_grid=torch.tensor([1.0, 0.0], dtype=x.dtype, device=x.device),
        exact_divergence=solve.div == "exact",
    )
    return LikelihoodResult(log_p, x, nfe)


def likelihood(solve: Solve, model: FlowMapNet, x: torch.Tensor, seed: int = 0) -> LikelihoodResult:
    """log p_1(x) (B,) of points x (B, *shape) by ``solve``; Hutchinson probes drawn from ``seed``."""
    if solve.impl == "flow_matching":
        return _peer_log_likelihood(model, x, solve, seed)
    gen = torch.Generator(x.device).manual_seed(seed)
    if solve.solver in ("flow map", "euler"):  # euler: the paper's baseline, f2d2's own K Euler steps of the joint ODE
        return log_likelihood(model, x, solve.steps, div=solve.div, generator=gen)
    tol = solve.tol if solve.tol is not None else 1e-5
    return reference_log_likelihood(
        model, x, method=solve.solver, steps=solve.steps, atol=tol, rtol=tol, div=solve.div, generator=gen
    )


def timed(fn: Callable[[], LikelihoodResult], min_seconds: float = 2.0, max_repeats: int = 9):
    """(result, seconds): ``fn``'s last result and its fastest wall time; repeated until ``min_seconds`` have passed
    (at most ``max_repeats`` times), so that a fast solve is timed several times and a slow one once. Two solves a
    few percent apart are compared with ``timed_twins`` instead."""
    best, spent, repeats = math.inf, 0.0, 0
    while repeats < max_repeats and (repeats == 0 or spent < min_seconds):
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        best, spent, repeats = min(best, seconds), spent + seconds, repeats + 1
    return result, best


def timed_twins(fns: tuple[Callable[[], LikelihoodResult], ...], rounds: int):
    """(results, times): the twin solves ``fns`` timed ``rounds`` times each, in rounds that alternate their order
    (a b, b a, a b, ...), so that a drift of the machine's speed falls on both alike; ``times[i]`` lists fn i's
    wall seconds per round, ``results[i]`` its last result."""
    if rounds < 1:
        raise ValueError(f"rounds = {rounds!r}; expected >= 1")
    results: list = [None] * len(fns)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            start = time.perf_counter()
            results[i] = fns[i]()
            times[i].append(time.perf_counter() - start)
    return results, times


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high) of ``values``: the distribution-free interval [v_(k), v_(n+1-k)] of the sorted values
    with the largest k whose coverage of the true median, 1 - 2 P(Binomial(n, 1/2) <= k - 1), is at least
    ``level`` (k = 1, the extremes, when no k reaches it: n < 6 at 0.95)."""
    v = sorted(values)
    n = len(v)
    if n == 0:
        raise ValueError("median_interval of no values")
    below = 0.0  # P(Binomial(n, 1/2) <= k - 1), for k = 1, 2, ...
    k = 1
    while k < (n + 1) // 2:
        below += math.comb(n, k - 1) / 2**n
        if 1 - 2 * (below + math.comb(n, k) / 2**n) < level:
            break
        k += 1
    mid = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return mid, v[k - 1], v[n - k]


def measure(
    solves: list[Solve],
    models: dict[str, FlowMapNet],
    x: torch.Tensor,
    reference_nll: torch.Tensor,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    paired_rounds: int = 9,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """One row per solve on points x (N, *shape): error (mean |NLL - reference NLL| in nats, ``reference_nll``
    (N,)), nfe (per point), seconds (all N points, in batches of ``batch_size``), pareto (on the front of these
    rows in seconds and error) and the solve's fields. An adaptive solve and its peer twin (the same solve through
    the other implementation, next in ``solves``) are timed together in ``paired_rounds`` alternating rounds
    (``timed_twins``): their rows keep each round's seconds (``round_seconds``) and report the fastest; every
    other solve is ``timed`` alone."""
    if len(reference_nll) != len(x):
        raise ValueError(f"reference_nll has {len(reference_nll)} values; the points are {len(x)}")
    if missing := sorted({s.run for s in solves} - set(models)):
        raise ValueError(f"solves of {missing}, which are not among the models {sorted(models)}")
    import flow_matching.solver  # noqa: F401  (both solvers' imports, before any clock starts)
    import torchdiffeq  # noqa: F401

    rows = []
    for group in _twins(solves):
        calls = tuple(solve_all(s, models, x, seed, batch_size) for s in group)
        if len(group) == 1:
            result, seconds = timed(calls[0])
            timings = [(result, seconds, {})]
        else:
            results, times = timed_twins(calls, paired_rounds)
            timings = [(r, min(t), {"round_seconds": t}) for r, t in zip(results, times)]
        for solve, (result, seconds, extra) in zip(group, timings):
            nll = -result.log_prob.double()
            finite = bool(torch.isfinite(nll).all())
            row = {**asdict(solve), "name": solve.name, "nfe": result.nfe, "seconds": seconds, **extra}
            row["error_nats"] = nll_error(nll, reference_nll) if finite else math.inf
            rows.append(row)
            if progress is not None:
                progress(f"{solve.name}: {row['error_nats']:.4g} nats, {seconds:.4g} s, {result.nfe} NFE")
    mark_front(rows)
    return rows


def solve_all(
    solve: Solve, models: dict[str, FlowMapNet], x: torch.Tensor, seed: int, batch_size: int | None
) -> Callable[[], LikelihoodResult]:
    """A call that computes ``solve``'s log p of all points x (N, *shape) in batches of ``batch_size``."""

    def call() -> LikelihoodResult:
        parts = [likelihood(solve, models[solve.run], chunk, seed) for chunk in x.split(batch_size or len(x))]
        # .cpu(): on a GPU the clock stops when the values are there, not when the kernels are queued
        return LikelihoodResult(torch.cat([p.log_prob for p in parts]).cpu(), x, max(p.nfe for p in parts))

    return call


def mark_front(rows: list[dict]) -> None:
    """Set each row's "pareto": on the front of ``rows`` in seconds and error."""
    for row, front in zip(rows, pareto([(r["seconds"], r["error_nats"]) for r in rows])):
        row["pareto"] = front


def cheapest_as_accurate(row: dict, teacher_rows: list[dict]) -> dict | None:
    """The fastest of ``teacher_rows`` whose error is at most ``row``'s (None when none is)."""
    matching = [t for t in teacher_rows if t["error_nats"] <= row["error_nats"]]
    return min(matching, key=lambda t: t["seconds"]) if matching else None


def retime_speedups(
    rows: list[dict],
    models: dict[str, FlowMapNet],
    x: torch.Tensor,
    teacher: str,
    *,
    rounds: int = 9,
    seed: int = 0,
    batch_size: int | None = None,
) -> None:
    """Time each K = 1 F2D2 row again with the cheapest teacher solve as accurate (``cheapest_as_accurate``) in
    ``rounds`` alternating rounds (``timed_twins``; the K = 1 rows that share that solve in one group, so it is timed
    once per round), so that the K = 1 speed-up is not a ratio of two timings taken minutes apart; each row's
    seconds becomes the fastest of all its timings, and the front is marked again."""
    teacher_rows = [r for r in rows if r["run"] == teacher]
    matched: dict[str, tuple[dict, list[dict]]] = {}  # teacher row name -> (that row, the K = 1 rows it matches)
    for row in [r for r in rows if r["solver"] == "flow map" and r["steps"] == 1]:
        best = cheapest_as_accurate(row, teacher_rows)
        if best is not None:
            matched.setdefault(best["name"], (best, []))[1].append(row)
    for best, k1_rows in matched.values():
        group = [*k1_rows, best]
        solves = [Solve(**{f.name: r[f.name] for f in fields(Solve)}) for r in group]
        _, times = timed_twins(tuple(solve_all(s, models, x, seed, batch_size) for s in solves), rounds)
        for r, t in zip(group, times):
            r["seconds"] = min(r["seconds"], *t)
    mark_front(rows)


def _twins(solves: list[Solve]) -> list[list[Solve]]:
    """``solves`` in order, in groups: an adaptive solve with the solves right after it that differ from it only in
    their implementation, every other solve alone."""
    groups: list[list[Solve]] = []
    for solve in solves:
        prev = groups[-1][0] if groups else None
        adaptive = solve.solver != "flow map" and solve.steps is None
        if adaptive and prev is not None and replace(prev, impl=solve.impl) == solve and prev.impl != solve.impl:
            groups[-1].append(solve)
        else:
            groups.append([solve])
    return groups


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For each (cost, error): True when no other point has cost <= and error <= with one of them strictly less."""
    return [not any(c <= cost and e <= err and (c < cost or e < err) for c, e in points) for cost, err in points]


def reference_nll(model: FlowMapNet, x: torch.Tensor, *, tol: float = 1e-5, probes: int = 0, seed: int = 0):
    """The reference NLL (N,) float64 of x (N, *shape) on the CPU: the dopri5 solve from t = 1 to 0 at ``tol``
    with the exact divergence, or the mean of ``probes`` Hutchinson solves (``probe_averaged_solve``)."""
    gen = torch.Generator(x.device).manual_seed(seed)
    x0, a = probe_averaged_solve(model, x, 1.0, 0.0, tol=tol, probes=probes, generator=gen)
    return -(standard_normal_log_prob(x0).double() + a).cpu()


def verdicts(rows: list[dict], teacher: str, *, speedup: float = 10.0) -> dict:
    """The frontier's targets on ``measure``'s rows: each F2D2 point (solver "flow map") not beaten by a solve of
    ``teacher`` in both seconds and error; at K = 1 at least ``speedup`` x faster than the cheapest teacher solve
    whose error is at most its own; f2d2's dopri5 at least as fast as the peer's at the same tolerance and
    divergence, judged on their paired rounds (``round_seconds``): the median of the peer's seconds / f2d2's with
    its 95% interval (``median_interval``), "faster" when the interval lies above 1, "slower" when below, else "a
    tie"; met unless slower. Returns {"front", "speedup", "peer": lists of dicts with "met", "lines": printable}."""
    teacher_rows = [r for r in rows if r["run"] == teacher]
    maps = [r for r in rows if r["solver"] == "flow map"]
    out: dict = {"front": [], "speedup": [], "peer": [], "lines": []}
    for r in maps:
        beaten = [
            t["name"] for t in teacher_rows if t["seconds"] <= r["seconds"] and t["error_nats"] <= r["error_nats"]
        ]
        out["front"].append({"name": r["name"], "met": not beaten, "beaten_by": beaten})
        out["lines"].append(
            f"front: {r['name']} ({r['error_nats']:.4g} nats, {r['seconds']:.4g} s) "
            + ("on the front: no teacher solve is faster and as accurate" if not beaten else f"beaten by {beaten}")
        )
    for r in (m for m in maps if m["steps"] == 1):
        best = cheapest_as_accurate(r, teacher_rows)
        ratio = best["seconds"] / r["seconds"] if best else math.inf
        met = ratio >= speedup
        out["speedup"].append({"name": r["name"], "cheapest": best and best["name"], "ratio": ratio, "met": met})
        against = f"{best['name']} ({best['error_nats']:.4g} nats, {best['seconds']:.4g} s)" if best else "none"
        out["lines"].append(
            f"speed-up: {r['name']}: the cheapest teacher solve as accurate is {against}: {ratio:.1f}x "
            f"({'>=' if met else '<'} {speedup:g}x): target {'met' if met else 'not met'}"
        )
    peers = {(r["div"], r["tol"]): r for r in teacher_rows if r["solver"] == "dopri5" and r["impl"] == "flow_matching"}
    for r in teacher_rows:
        peer = peers.get((r["div"], r["tol"]))
        if r["solver"] != "dopri5" or r["impl"] != "f2d2" or peer is None:
            continue
        ratio, low, high = median_interval([p / f for f, p in zip(r["round_seconds"], peer["round_seconds"])])
        verdict = "faster" if low > 1 else "slower" if high < 1 else "a tie"
        met = high >= 1
        out["peer"].append(
            {"div": r["div"], "tol": r["tol"], "ratio": ratio, "low": low, "high": high, "verdict": verdict, "met": met}
        )
        out["lines"].append(
            f"own vs peer: dopri5 {r['tol']:g} {r['div']}: f2d2 {r['seconds']:.4g} s, flow_matching "
            f"{peer['seconds']:.4g} s (fastest of {len(r['round_seconds'])} paired rounds); peer / f2d2 per round: "
            f"median {ratio:.3f}x [{low:.3f}, {high:.3f}]: {verdict} ({'met' if met else 'not met'})"
        )
    return out


def run(
    models: dict[str, FlowMapNet],
    teacher: str,
    runs: list[str],
    x: torch.Tensor,
    *,
    steps: Iterable[int] = (1, 2, 4, 8),
    grid: dict | None = None,
    ref_tol: float = 1e-5,
    ref_probes: int = 0,
    speedup: float = 10.0,
    seed: int = 0,
    batch_size: int | None = None,
    paired_rounds: int = 9,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The frontier of points x (N, *shape): the reference (``reference_nll``), every F2D2 run's K-step solve and
    every teacher solve (``teacher_solves(teacher, **grid)``) measured side by side (``measure``; the K = 1 speed-ups
    timed again in ``paired_rounds`` rounds, ``retime_speedups``), and the ``verdicts``. Returns
    {"n", "dim", "reference", "seed", "rows", "verdicts", "seconds" (the whole measurement's wall time)};
    ``models`` holds the teacher and the runs."""
    start = time.perf_counter()
    if missing := sorted({teacher, *runs} - set(models)):
        raise ValueError(f"no model for {missing}; the models: {sorted(models)}")
    if progress is not None:
        progress(f"reference: dopri5 {ref_tol:g}, {'exact divergence' if not ref_probes else f'{ref_probes} probes'}")
    ref = reference_nll(models[teacher], x, tol=ref_tol, probes=ref_probes, seed=seed)
    solves = f2d2_solves(runs, steps) + teacher_solves(teacher, **(grid or {}))
    rows = measure(
        solves, models, x, ref, seed=seed, batch_size=batch_size, paired_rounds=paired_rounds, progress=progress
    )
    retime_speedups(rows, models, x, teacher, rounds=paired_rounds, seed=seed, batch_size=batch_size)
    return {
        "n": len(x),
        "dim": math.prod(x.shape[1:]),
        "reference": {"solver": "dopri5", "tol": ref_tol, "probes": ref_probes, "mean_nll_nats": float(ref.mean())},
        "seed": seed,
        "rows": rows,
        "verdicts": verdicts(rows, teacher, speedup=speedup),
        "seconds": round(time.perf_counter() - start, 3),
    }


def write(record: dict, out, *, title: str = "") -> None:
    """``run``'s record (plus whatever the caller added) as out/frontier.json, its rows as out/frontier.csv and
    its figure as out/frontier.png."""
    out = Path(out)
    atomic_write_text(out / "frontier.json", json.dumps(record, indent=1) + "\n")
    write_csv(record["rows"], out / "frontier.csv")
    figure(record["rows"], out / "frontier.png", title=title)


CSV_COLUMNS = ("name", "run", "solver", "steps", "tol", "div", "impl", "nfe", "seconds", "error_nats", "pareto")


def write_csv(rows: list[dict], path) -> None:
    """``measure``'s rows as a CSV (CSV_COLUMNS), written atomically."""
    import pandas as pd

    atomic_write_text(path, pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(index=False))


MARKERS = {"flow map": "o", "euler": "s", "midpoint": "^", "rk4": "D", "dopri5": "*"}


def figure(rows: list[dict], path, *, title: str = "") -> None:
    """Error against NFE and against seconds (log-log): F2D2 runs as lines through their K, the teacher's solves
    by method (filled: exact divergence, hollow: Hutchinson; grey: the flow_matching peer), the Pareto front in
    seconds and error as a step line with its points ringed. Written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-6  # a zero error (the reference against itself) drawn at the floor of the log axis
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    runs = list(dict.fromkeys(r["run"] for r in rows if r["solver"] == "flow map"))
    colours = dict(zip(runs, plt.get_cmap("tab10").colors))
    for ax, cost in zip(axes, ("nfe", "seconds")):
        for run in runs:
            mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["steps"])
            ax.plot(
                [r[cost] for r in mine],
                [max(r["error_nats"], floor) for r in mine],
                "o-",
                color=colours[run],
                label=f"{run} (F2D2, K = {', '.join(str(r['steps']) for r in mine)})",
                zorder=3,
            )
        for solver in ("euler", "midpoint", "rk4", "dopri5"):
            for impl, colour in (("f2d2", "tab:red"), ("flow_matching", "0.55")):
                for div in ("exact", "hutchinson"):
                    pts = [
                        r
                        for r in rows
                        if (r["solver"], r["impl"], r["div"]) == (solver, impl, div) and r["run"] not in runs
                    ]
                    if not pts:
                        continue
                    ax.plot(
                        [r[cost] for r in pts],
                        [max(r["error_nats"], floor) for r in pts],
                        MARKERS[solver],
                        ls="",
                        color=colour,
                        mfc=colour if div == "exact" else "none",
                        alpha=0.8,
                        label=f"teacher {solver}, {div}" + (" (flow_matching)" if impl != "f2d2" else ""),
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("model evaluations per point (NFE)" if cost == "nfe" else "wall seconds, all points, 1 thread")
        ax.set_ylabel("mean |NLL - reference NLL| (nats)")
        ax.grid(True, which="both", alpha=0.3)
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["seconds"])
    axes[1].step(
        [r["seconds"] for r in front],
        [max(r["error_nats"], floor) for r in front],
        where="post",
        color="k",
        lw=1,
        label="Pareto front (seconds, error)",
    )
    axes[1].plot(
        [r["seconds"] for r in front], [max(r["error_nats"], floor) for r in front], "o", ms=12, mfc="none", color="k"
    )
    axes[0].set_title("error against model evaluations")
    axes[1].set_title("error against time (the front is what no other solve beats)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=7)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
