"""Where a K-step likelihood's error comes from, per jump: each F2D2 model's K flow-map jumps from the data (t = 1)
back to the noise (t = 0), each jump compared with the teacher's ODE (or, with --against own, the model's own
velocity's) solved over the same interval from the same point. Not a test: it prints numbers.

    python bench/jumps.py --config config/patches.yaml --results results/patches --n 100 --probes 8

For a jump from s to t starting at the model's own x_s: the model gives x_t and its log-density change
dlogp = -(t - s) c D(x_s, s, t); the teacher's joint ODE over [s, t] from the same x_s (dopri5 at --tol) gives
x_t^ref and dlogp^ref = -integral_s^t div v (exact divergence, or the mean of --probes Hutchinson solves, for which
the path does not depend on the probe). Printed per model, K and jump: the mean signed and absolute divergence
error dlogp^ref - dlogp, what the jump adds to the error of log p(x1) (nats; the signed mean is the jump's bias,
positive = log p too high), the RMS per
dimension of x_t - x_t^ref (how far the jump lands off the teacher's path), and the jump's semigroup residual: its
dlogp less the sum of its own two half jumps' (through m = (s + t) / 2; nats, 0 for an exact flow map: where the
head disagrees with the recursion it was trained on). Then per model and K the whole error
against the teacher's solve from the data: log p(x1) = log N(x0) + sum of dlogp, split into its endpoint part
log N(x0) - log N(x0^ref) and its divergence part (signed means and mean absolute values, nats and bits/dim).
The sum of the jumps' local divergence errors is the divergence part less what the model's own path moved it by.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

import f2d2
from f2d2.cli.commands import frontier_points
from f2d2.config import experiment
from f2d2.config.resolve import load_yaml
from f2d2.core.flowmap import flow_map_step
from f2d2.core.likelihood import probe_averaged_solve, standard_normal_log_prob, time_grid
from f2d2.io.atomic import atomic_write_text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("config/patches.yaml"), help="the experiment's config")
    p.add_argument("--results", type=Path, required=True, help="its output folder (trained, evaluated)")
    p.add_argument("--runs", nargs="*", default=None, help="F2D2 runs (default: the config's F2D2 stages)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8], help="K")
    p.add_argument("--n", type=int, default=100, help="test points")
    p.add_argument(
        "--pick",
        choices=("first", "random", "smoothest"),
        default="random",
        help="which n test points: the first, a seeded random subset, or those of lowest reference NLL in the "
        "pipeline's eval/nll/<teacher>/reference.csv (for images: the smoothest patches)",
    )
    p.add_argument("--tol", type=float, default=1e-4, help="the teacher's dopri5 atol = rtol")
    p.add_argument("--probes", type=int, default=8, help="0: exact divergence; > 0: mean of that many probes")
    p.add_argument(
        "--against",
        choices=["teacher", "own"],
        default="teacher",
        help="the ODE each model is compared with: the teacher's, or the model's own velocity u(x, t, t) (its own "
        "flow, the density a div_source: self head learns)",
    )
    p.add_argument("--backward", default=None, help="two-way | forward-only (default: the config's eval.backward)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probes and the dequantization")
    p.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    return p.parse_args(argv)


def pick(args: argparse.Namespace, teacher: str, total: int) -> torch.Tensor:
    """Indices of the --n test points --pick chooses among ``total``."""
    if args.pick == "first":
        return torch.arange(min(args.n, total))
    if args.pick == "random":
        return torch.randperm(total, generator=torch.Generator().manual_seed(args.seed))[: args.n]
    nll = np.loadtxt(args.results / "eval" / "nll" / teacher / "reference.csv", delimiter=",", skiprows=1, usecols=0)
    return torch.from_numpy(np.argsort(nll, kind="stable")[: args.n])


def ode_interval(ode, x: torch.Tensor, s: float, t: float, tol: float, probes: int, gen) -> tuple:
    """(x_t^ref, dlogp^ref (N,) float64) of model ``ode``'s joint ODE (its velocity u(x, t, t)) from x (N, *shape)
    at s to t."""
    xt, a = probe_averaged_solve(ode, x, s, t, tol=tol, probes=probes, generator=gen)
    return xt, -a


@torch.no_grad()
def semigroup_residual(
    model, x: torch.Tensor, s: float, t: float, backward: str, whole: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) float64: the dlogp of the jump s -> t from x (B, *shape) (``whole``, when the caller has it) less that of
    its two half jumps through m = (s + t) / 2, the second from the first's landing point (nats; 0 for an exact
    flow map)."""
    m = (s + t) / 2
    if whole is None:
        _, whole = flow_map_step(model, x, s, t, div="head", backward=backward)
    xm, first = flow_map_step(model, x, s, m, div="head", backward=backward)
    _, second = flow_map_step(model, xm, m, t, div="head", backward=backward)
    return whole.double() - first.double() - second.double()


def split(model, ode, x1, k, backward, ref_x0, ref_logp, tol, probes, gen) -> dict:
    """One model at K: the per-jump comparison and the whole error's split (see the module docstring)."""
    x, jumps, delta = x1, [], torch.zeros(len(x1), dtype=torch.float64)
    with torch.no_grad():
        for s, t in zip(time_grid(k)[:-1], time_grid(k)[1:]):
            xt, dlogp = flow_map_step(model, x, s, t, div="head", backward=backward)
            xt_ref, dlogp_ref = ode_interval(ode, x, s, t, tol, probes, gen)
            err = dlogp_ref - dlogp.double()  # what this jump adds to the error of log p(x1) = log N(x0) - sum dlogp
            jumps.append(
                {
                    "s": s,
                    "t": t,
                    "div_err_mean": float(err.mean()),
                    "div_err_abs": float(err.abs().mean()),
                    "x_rms": float((xt - xt_ref).pow(2).mean().sqrt()),
                    "semigroup_resid_mean": float(semigroup_residual(model, x, s, t, backward, dlogp).mean()),
                }
            )
            delta += dlogp.double()
            x = xt
    end, end_ref = standard_normal_log_prob(x).double(), standard_normal_log_prob(ref_x0).double()
    logp = end - delta
    return {
        "k": k,
        "jumps": jumps,
        "err_mean": float((logp - ref_logp).mean()),
        "err_abs": float((logp - ref_logp).abs().mean()),
        "endpoint_mean": float((end - end_ref).mean()),
        "endpoint_abs": float((end - end_ref).abs().mean()),
        "divergence_mean": float((ref_logp - end_ref + delta).mean()) * -1,
        "divergence_abs": float((ref_logp - end_ref + delta).abs().mean()),
        "x0_rms": float((x - ref_x0).pow(2).mean().sqrt()),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_yaml(args.config)
    teacher_name = experiment.reference_stage(cfg)
    runs = args.runs if args.runs is not None else experiment.f2d2_stages(cfg)
    backward = args.backward or cfg.get("eval", {}).get("backward", "two-way")
    teacher = f2d2.load(args.results / "train" / teacher_name / "checkpoint.pt")
    x1 = frontier_points(args.results / "eval" / "test_points.npy", teacher.data_shape, None, args.seed)
    x1 = x1[pick(args, teacher_name, len(x1))]
    gen = torch.Generator().manual_seed(args.seed)
    dim = math.prod(x1.shape[1:])
    result = {"command": " ".join(sys.argv), "n": len(x1), "pick": args.pick, "dim": dim, "backward": backward}
    result["against"], result["runs"] = args.against, {}
    for run in runs:
        model = f2d2.load(args.results / "train" / run / "checkpoint.pt")
        ode = teacher if args.against == "teacher" else model
        print(
            f"[jumps] {run}: {args.against} ODE from the data, dopri5 {args.tol:g}, probes {args.probes}",
            file=sys.stderr,
        )
        ref_x0, ref_delta = ode_interval(ode, x1, 1.0, 0.0, args.tol, args.probes, gen)
        ref_logp = standard_normal_log_prob(ref_x0).double() - ref_delta
        result["runs"][run] = []
        for k in args.steps:
            row = split(model, ode, x1, k, backward, ref_x0, ref_logp, args.tol, args.probes, gen)
            result["runs"][run].append(row)
            print(f"[jumps] {run} K={k}: {row['err_abs']:.2f} nats", file=sys.stderr)
    print_table(result)
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


def print_table(result: dict) -> None:
    bpd = 1 / (result["dim"] * math.log(2))
    print(
        f"{result['n']} points ({result['pick']}), backward {result['backward']}; "
        "nats (signed: model - teacher, + = log p too high)"
    )
    print(f"{'run':22s} {'K':>2s} {'error':>16s} {'endpoint part':>16s} {'divergence part':>16s} {'x0 rms':>7s}")
    for run, rows in result["runs"].items():
        for r in rows:
            print(
                f"{run:22s} {r['k']:2d} {r['err_mean']:+7.2f} |{r['err_abs']:6.2f}| "
                f"{r['endpoint_mean']:+7.2f} |{r['endpoint_abs']:6.2f}| {r['divergence_mean']:+7.2f} "
                f"|{r['divergence_abs']:6.2f}| {r['x0_rms']:7.4f}   (mean error {r['err_mean'] * bpd:+.3f} bits/dim)"
            )
            for j in r["jumps"]:
                print(
                    f"{'':22s}    jump {j['s']:.3f} -> {j['t']:.3f}: divergence {j['div_err_mean']:+7.2f} "
                    f"|{j['div_err_abs']:6.2f}|, lands {j['x_rms']:.4f} rms off the teacher's path, "
                    f"semigroup residual {j['semigroup_resid_mean']:+7.2f}"
                )


if __name__ == "__main__":
    sys.exit(main())
