"""Where a divergence head's tangent is off: c D(x, t, t) against the divergence of the model's own velocity
u(x, t, t) (or, with --against teacher, the teacher's), at the interpolant's points I_t = t x1 + (1 - t) x0 (where the
head is trained) and at the points of that velocity's ODE paths from the same test data x1 (where a likelihood
queries it). Not a test: it prints numbers.

    python bench/head_fit.py --config config/patches.yaml --results results/patches --n 64

Per run and t: the mean and spread of the own divergence over the points, the head's mean, the head's mean error
(signed, nats per unit time, and as a share of the divergence; + = the head is above it: a log-density too low when
integrated from the data), its RMS error, the per-point correlation of the two and the slope of the head on the
divergence (below 1: the head shrinks each point's divergence towards their mean). The divergence is exact (one
vector-Jacobian product per dimension); the paths are solved with dopri5 at --tol from t = 1 (with a Hutchinson
divergence beside them, which the path does not depend on). A run without a head prints the divergence alone. Time
runs from t = 0 (noise) to t = 1 (data).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import f2d2
from f2d2.cli.commands import frontier_points
from f2d2.config import experiment
from f2d2.config.resolve import load_yaml
from f2d2.core.divergence import divergence
from f2d2.core.likelihood import parameters_frozen, solve_joint_ode
from f2d2.io.atomic import atomic_write_text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("config/patches.yaml"), help="the experiment's config")
    p.add_argument("--results", type=Path, required=True, help="its output folder (trained)")
    p.add_argument("--runs", nargs="*", default=None, help="runs (default: the config's F2D2 stages)")
    p.add_argument("--checkpoints", nargs="*", type=Path, default=[], help="further checkpoints, named by path")
    p.add_argument("--n", type=int, default=64, help="the first n test points")
    p.add_argument("--times", type=float, nargs="+", default=[1.0, 0.97, 0.9375, 0.875, 0.75, 0.5], help="t")
    p.add_argument("--tol", type=float, default=1e-4, help="the paths' dopri5 atol = rtol")
    p.add_argument(
        "--against",
        choices=["own", "teacher"],
        default="own",
        help="whose velocity: the model's own or the config's teacher (what a div_source: teacher head learns)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantization and of the noise x0")
    p.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    args = p.parse_args(argv)
    if args.n < 2 or any(not 0 <= t <= 1 for t in args.times):
        p.error(f"--n {args.n} (>= 2) and --times {args.times} (each in [0, 1]): expected the ranges in brackets")
    return args


def fit(model: f2d2.FlowMapNet, ode: f2d2.FlowMapNet, x: torch.Tensor, t: float) -> dict:
    """The divergence of ``ode``'s velocity and ``model``'s head c D(x, t, t) at points x (B, *shape) and time t."""
    tt = torch.full((len(x),), t)
    _, div = divergence(lambda z: ode.velocity(z, tt), x, "exact")
    div = div.double()
    row = {"t": t, "div_mean": float(div.mean()), "div_sd": float(div.std())}
    if model.has_div_head:
        with torch.no_grad():
            head = (model(x, tt, tt).d * model.div_scale).double()
        err = head - div
        row.update(
            head_mean=float(head.mean()),
            err_mean=float(err.mean()),
            err_share=float(err.mean() / div.mean()),
            err_rms=float(err.pow(2).mean().sqrt()),
            corr=float(np.corrcoef(div.numpy(), head.numpy())[0, 1]) if div.std() > 0 and head.std() > 0 else None,
            # least-squares slope of the head on the divergence over the points: below 1, the head pulls each
            # point's divergence towards their mean
            slope=float(((head - head.mean()) * (div - div.mean())).mean() / div.var(unbiased=False))
            if div.std() > 0
            else None,
        )
    return row


def own_path(model: f2d2.FlowMapNet, x1: torch.Tensor, times: list[float], tol: float) -> dict[float, torch.Tensor]:
    """{t: x_t} on the ODE paths of the model's velocity from data x1 (B, *shape) at t = 1, for each of ``times``."""
    path, x, s = {}, x1, 1.0
    with torch.no_grad():
        for t in sorted(times, reverse=True):
            if t < s:
                x, _, _ = solve_joint_ode(model, x, s, t, atol=tol, rtol=tol, div="hutchinson")
                s = t
            path[t] = x
    return path


def head_fit(
    model: f2d2.FlowMapNet,
    x1: torch.Tensor,
    times: list[float],
    tol: float,
    seed: int,
    ode: f2d2.FlowMapNet | None = None,
) -> dict:
    """{"interpolant": rows, "path": rows} of :func:`fit` at each of ``times`` (in decreasing order), against the
    velocity of ``ode`` (default: the model's own) and along its paths."""
    ode = model if ode is None else ode
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(seed))
    times = sorted(times, reverse=True)
    with parameters_frozen(model), parameters_frozen(ode):  # the divergences need gradients in x alone
        path = own_path(ode, x1, times, tol)
        return {
            "interpolant": [fit(model, ode, t * x1 + (1 - t) * x0, t) for t in times],
            "path": [fit(model, ode, path[t], t) for t in times],
        }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_yaml(args.config)
    runs = args.runs if args.runs is not None else experiment.f2d2_stages(cfg)
    paths = {run: args.results / "train" / run / "checkpoint.pt" for run in runs}
    paths.update({str(p): p for p in args.checkpoints})
    result = {"command": " ".join(sys.argv), "n": args.n, "seed": args.seed, "tol": args.tol, "runs": {}}
    result["against"] = args.against
    teacher = None
    if args.against == "teacher":
        teacher = f2d2.load(args.results / "train" / experiment.reference_stage(cfg) / "checkpoint.pt")
    for name, path in paths.items():
        model = f2d2.load(path)
        x1 = frontier_points(args.results / "eval" / "test_points.npy", model.data_shape, args.n, args.seed)
        print(f"[head_fit] {name}", file=sys.stderr)
        result["runs"][name] = head_fit(model, x1, args.times, args.tol, args.seed, ode=teacher)
    print_table(result)
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


def print_table(result: dict) -> None:
    print(
        f"{result['n']} test points; the {result['against']} velocity's divergence (exact) and the head's "
        "c D(x, t, t), nats per unit time"
    )
    for name, rows in result["runs"].items():
        print(name)
        for where in ("interpolant", "path"):
            for r in rows[where]:
                line = f"  {where:11s} t = {r['t']:.4f}: divergence {r['div_mean']:9.1f} (sd {r['div_sd']:7.1f})"
                if "head_mean" in r:
                    line += (
                        f"  head {r['head_mean']:9.1f}  error {r['err_mean']:+8.1f} ({100 * r['err_share']:+5.1f}%)"
                        f"  rms {r['err_rms']:7.1f}  corr {r['corr'] if r['corr'] is None else round(r['corr'], 3)}"
                        f"  slope {r['slope'] if r['slope'] is None else round(r['slope'], 3)}"
                    )
                print(line)


if __name__ == "__main__":
    sys.exit(main())
