"""The speed-accuracy frontier, side by side in one process on one thread: every F2D2 stage of an experiment at
K = 1, 2, 4, 8 against its teacher's joint ODE with fixed-step Euler, midpoint and RK4 and with dopri5 at several
tolerances, exact and Hutchinson divergence, through f2d2's integrators and flow_matching's ODESolver (the peer).
Not a test: it prints numbers.

    python bench/frontier.py --config config/config.yaml --results results --out results/frontier
    python bench/frontier.py --config config/patches.yaml --results results/patches --n 100 --divs hutchinson \\
        --ref-tol 1e-4 --ref-probes 32 --speedup 30 --out results/frontier/patches

Points: the first --n of the pipeline's test points (<results>/eval/test_points.npy; images dequantized once with
--seed and scored in model space, where an NLL error equals the pixels' NLL error). Error: mean per-point
|NLL - reference NLL| in nats, the reference being the teacher's dopri5 solve at --ref-tol with the exact
divergence (--ref-probes > 0: the mean of that many Hutchinson solves instead, for data of many dimensions).
Seconds: all --n points, the fastest of up to nine repeats within 2 s (f2d2.eval.frontier.timed); each dopri5
solve and its peer twin, and then each K = 1 F2D2 solve and the cheapest teacher solve as accurate, are timed in
--paired-rounds alternating rounds (f2d2.eval.frontier.timed_twins, retime_speedups).

Prints one row per solve (error, NFE, seconds, on the Pareto front or not), then the targets: every F2D2 point at
K <= 8 on the front against the teacher's solves; at K = 1 >= --speedup x faster than the cheapest teacher solve
as accurate; f2d2's dopri5 at least as fast as the peer's at each tolerance (the median of the rounds' speed ratios
with its 95% interval: faster, a tie or slower). Writes --out/frontier.json (command,
seeds, checkpoints, rows, verdicts), frontier.csv and frontier.png (error against NFE and against seconds).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import f2d2
from f2d2.cli.commands import frontier_points, measure_frontier
from f2d2.cli.parser import add_frontier_grid
from f2d2.config import experiment
from f2d2.config.resolve import load_yaml
from f2d2.eval import frontier


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("config/config.yaml"), help="the experiment's config")
    p.add_argument("--results", type=Path, default=Path("results"), help="its output folder (trained, evaluated)")
    p.add_argument("--runs", nargs="*", default=None, help="F2D2 runs (default: the config's F2D2 stages)")
    p.add_argument("--n", type=int, default=2000, help="test points scored")
    add_frontier_grid(p)
    p.add_argument("--out", type=Path, default=None, help="write frontier.json, .csv and .png here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_yaml(args.config)
    teacher = experiment.reference_stage(cfg)
    runs = args.runs if args.runs is not None else experiment.f2d2_stages(cfg)
    ckpts = {run: args.results / "train" / run / "checkpoint.pt" for run in [teacher, *runs]}
    if missing := [str(p) for p in ckpts.values() if not p.is_file()]:
        raise SystemExit(f"--results {args.results}: no checkpoint at {', '.join(missing)}; run the pipeline first")
    models = {run: f2d2.load(path) for run, path in ckpts.items()}
    x = frontier_points(args.results / "eval" / "test_points.npy", models[teacher].data_shape, args.n, args.seed)
    print(f"[frontier] {len(x)} points of shape {tuple(x.shape[1:])}; reference solve ...", file=sys.stderr)
    record = measure_frontier(models, teacher, runs, x, args, lambda line: print(f"[frontier] {line}", file=sys.stderr))
    print_table(record)
    if args.out is not None:
        record = {
            "command": " ".join(sys.argv),
            "config": str(args.config),
            "train_seed": cfg.get("seed", 0),
            "threads": 1,
            "checkpoints": {run: str(p) for run, p in ckpts.items()},
            **record,
        }
        frontier.write(record, args.out, title=f"{cfg.get('experiment', args.config.stem)}, N = {len(x)}")
        print(f"wrote {args.out}/frontier.json, frontier.csv, frontier.png")
    return 0


def print_table(record: dict) -> None:
    print(f"{'solve':48s} {'NFE':>5s} {'seconds':>9s} {'error nats':>11s} {'bits/dim':>9s} front")
    for r in record["rows"]:
        bpd = r["error_nats"] / (record["dim"] * math.log(2))
        print(
            f"{r['name']:48s} {r['nfe']:5d} {r['seconds']:9.4f} {r['error_nats']:11.4g} {bpd:9.4g} "
            f"{'*' if r['pareto'] else ''}"
        )
    for line in record["verdicts"]["lines"]:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
