"""Importance sampling with one-step proposals, side by side in one process: self-normalised importance sampling
of the 2D target (the checkerboard, or your own density) with each F2D2 model's K-step samples and their log q, next
to the teacher's K-step Euler log q and its dopri5 reference, each timed. Not a test: it prints numbers.

    python bench/importance.py --results results --n 2000 10000 [--log-prob-from noise sample] [--check-log-q]

Reads <results>/train/<run>/checkpoint.pt of --runs and --teacher; one thread. Prints one row per (run, proposal,
n): ESS / N, |log Z error|, |E|x|^2 error|, |E[x1 x2] error|, support share, seconds, and the ratios to the
reference's ESS and seconds (the median of --repeats timed draws); then per F2D2 run and way of computing log q
(--log-prob-from: along the forward steps from the noise, or the likelihood of the returned sample) whether its one-
step ESS is within 10% of the reference's at >= 100x less time. --check-log-q adds mean |log q(x) - log p_ref(x)|,
each proposal's log q against the teacher's dopri5 log-density of the same samples, the ESS / N those samples would
have with log p_ref in place of their log q (how much of an ESS loss is the samples', how much their log q's), and
for the K-step proposals the ESS / N with the sampler's exact density (``sampler_log_density``: the change of
variables through the K-step map's Jacobian; the weights that make SNIS consistent) with the share of samples where
that map folds. --out writes every number as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

import f2d2
from f2d2.cli.commands import timed_samples
from f2d2.core.options import LOG_PROB_FROM
from f2d2.eval.importance import checkerboard_target, function_target, sampler_log_density, snis
from f2d2.io.atomic import atomic_write_text
from f2d2.io.checkpoint import load_checkpoint

ESS_TOL, SPEEDUP = 0.10, 100.0  # the target: one-step ESS within 10% of the reference's at >= 100x less time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results"), help="a trained experiment's output folder")
    p.add_argument(
        "--runs",
        nargs="+",
        default=["shortcut_f2d2", "shortcut_distill_f2d2", "meanflow_f2d2"],
        help="F2D2 runs under <results>/train",
    )
    p.add_argument("--teacher", default="teacher", help="the teacher's run: its K-step Euler and dopri5 proposals")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8], help="the K of every run")
    p.add_argument("--n", type=int, nargs="+", default=[2000, 10000], help="samples per proposal")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed draws of every proposal (the same noise); its seconds: the median"
    )
    p.add_argument(
        "--log-prob-from",
        nargs="+",
        choices=LOG_PROB_FROM,
        default=list(LOG_PROB_FROM),
        help="where the K-step proposals' log q is computed, a row per entry (f2d2.sample's log_prob_from)",
    )
    p.add_argument("--target-fn", default=None, help="your log p~, 'package.module:function' (default: checkerboard)")
    p.add_argument("--check-log-q", action="store_true", help="also compare log q with the teacher's dopri5 log p")
    p.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats {args.repeats}: expected >= 1")
    torch.set_num_threads(1)
    ckpt = {run: args.results / "train" / run / "checkpoint.pt" for run in [*args.runs, args.teacher]}
    if missing := [str(path) for path in ckpt.values() if not path.is_file()]:
        raise SystemExit(f"no checkpoint at {', '.join(missing)}")
    if args.target_fn:
        target = function_target(args.target_fn)
    else:
        target = checkerboard_target(load_checkpoint(ckpt[args.teacher])["config"]["data"].get("scale", 2.0))
    models = {run: f2d2.load(path) for run, path in ckpt.items()}
    proposals = [(run, k, how) for run in [*args.runs, args.teacher] for k in args.steps for how in args.log_prob_from]
    proposals.append((args.teacher, None, "noise"))
    result = {"results": str(args.results), "target": target.name, "seed": args.seed, "threads": 1, "rows": []}
    for n in args.n:
        rows = []
        for run, k, how in proposals:
            timings = []  # the same noise each time; a machine's hiccups are ms, a one-step proposal's whole time
            for _ in range(args.repeats):
                gen = torch.Generator().manual_seed(args.seed)
                x, log_q, seconds = timed_samples(models[run], n, k, generator=gen, log_prob_from=how)
                timings.append(seconds)
            row = {"run": run, "proposal": "reference" if k is None else f"K={k}", "log_prob_from": how, "n": n}
            row["seconds"] = seconds = statistics.median(timings)
            row.update(snis(x, log_q, target))
            if args.check_log_q:
                ref_log_p = f2d2.log_prob(models[args.teacher], x, steps=None).double()
                row["log_q_vs_reference_abs_err"] = float((log_q.double() - ref_log_p).abs().mean())
                row["ess_with_reference_log_p"] = snis(x, ref_log_p, target)["ess_per_sample"]
                row["ess_with_sampler_density"] = row["folded_share"] = None
                euler_path = how == "noise" and models[run].flow_map and not models[run].has_div_head
                if k is not None and not euler_path:  # (a head-less map's "noise" log q walks Euler steps instead)
                    noise = torch.randn(
                        (n, *models[run].data_shape), generator=torch.Generator().manual_seed(args.seed)
                    )
                    exact, folded = sampler_log_density(models[run], noise, k)
                    row["ess_with_sampler_density"] = snis(x, exact, target)["ess_per_sample"]
                    row["folded_share"] = float(folded.double().mean())
            rows.append(row)
            print(f"[bench] {run} {row['proposal']} log q from the {how} n={n}: {seconds:.4f} s", file=sys.stderr)
        ref = next(r for r in rows if r["proposal"] == "reference")
        for r in rows:
            r["ess_vs_reference"] = r["ess_per_sample"] / ref["ess_per_sample"]
            r["speedup_vs_reference"] = ref["seconds"] / r["seconds"]
        result["rows"] += rows
    print_table(result, args.runs)
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


def print_table(result: dict, f2d2_runs: list[str]) -> None:
    """Every row, then the verdict of each F2D2 run's one-step proposal against the reference."""
    check = any("log_q_vs_reference_abs_err" in r for r in result["rows"])
    print(f"self-normalised importance sampling of {result['target']}, seed {result['seed']}, one thread")
    head = f"{'run':22s} {'proposal':9s} {'log q':6s} {'n':>6s} {'ESS/N':>6s} {'|dlogZ|':>8s} {'|d|x|2|':>8s}"
    head += f" {'|dx1x2|':>8s}"
    head += f" {'supp':>5s} {'seconds':>9s} {'ESS/ref':>7s} {'speedup':>8s}"
    head += " |logq-ref| ESS(ref p) ESS(exact q) folded" if check else ""
    print(head)

    def num(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for r in result["rows"]:
        e = r["expectations"]
        line = (
            f"{r['run']:22s} {r['proposal']:9s} {r['log_prob_from']:6s} {r['n']:6d} {r['ess_per_sample']:6.4f} "
            f"{num(r['log_z_abs_err'], '8.4f')} {num(e['sq_norm']['abs_err'], '8.4f')} "
            f"{num(e['x1x2']['abs_err'], '8.4f')} {r['support_share']:5.3f} "
            f"{r['seconds']:9.4f} {r['ess_vs_reference']:7.3f} {r['speedup_vs_reference']:7.1f}x"
        )
        if check:
            line += f" {r['log_q_vs_reference_abs_err']:10.4f} {r['ess_with_reference_log_p']:10.4f}"
            line += f" {num(r['ess_with_sampler_density'], '12.4f')} {num(r['folded_share'], '6.4f')}"
        print(line)
    for r in result["rows"]:
        if r["run"] in f2d2_runs and r["proposal"] == "K=1":
            ess_ok = abs(r["ess_vs_reference"] - 1) <= ESS_TOL
            fast = r["speedup_vs_reference"] >= SPEEDUP
            print(
                f"{r['run']} K=1 (log q from the {r['log_prob_from']}), n={r['n']}: ESS/N {r['ess_per_sample']:.4f} = "
                f"{r['ess_vs_reference']:.3f} x the "
                f"reference's ({'within' if ess_ok else 'not within'} {ESS_TOL:.0%}), "
                f"{r['speedup_vs_reference']:.0f}x less time ({'>=' if fast else '<'} {SPEEDUP:.0f}x): "
                f"target {'met' if ess_ok and fast else 'not met'}"
            )


if __name__ == "__main__":
    sys.exit(main())
