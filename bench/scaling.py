"""How the one-step likelihood's advantage grows with the dimension: the K = 1 F2D2 likelihood against the cheapest
teacher solve of equal or better error and against the reference solve, at 2D, 8x8, 16x16 and 32x32 pixels and
several batch sizes, side by side in one process. Not a test: it prints numbers.

    python bench/scaling.py --frontier results/eval/frontier/frontier.json \\
        results/patches/eval/frontier/frontier.json --out results/scaling.json [--device cuda]

Accuracy comes from the frontier records (bench/frontier.py or the pipeline's `f2d2 frontier`) of trained runs:
the 2D record and the 8x8 patches record give, for the best F2D2 run at K = 1, its error, the cheapest teacher
solve with an error at most as large (its method, NFE and divergence) and the reference solve's NFE. Time is
measured here on networks of each size with the architecture of those runs (an MLP in 2D, the patches U-Net at
8x8, 16x16 and 32x32; untrained weights, which cost the same): the K = 1 likelihood (one evaluation with the
divergence head), and one model evaluation of the teacher's joint ODE with a Hutchinson probe (one vector-Jacobian
product) and with the exact divergence (D of them; above --exact-max-dim taken as D times one product). A teacher
solve's time is its NFE times that cost: the NFE of a size without a trained model is the 8x8 run's (an adaptive
solve's NFE grows with the dimension, so this understates the teacher's cost there). One thread on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from f2d2.core.divergence import divergence
from f2d2.core.likelihood import log_likelihood
from f2d2.eval.frontier import timed
from f2d2.io.atomic import atomic_write_text
from f2d2.io.checkpoint import load_checkpoint
from f2d2.nets import build_model


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frontier", type=Path, nargs="+", required=True, help="frontier.json of a 2D and a patches run")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32], help="image sizes (pixels per side)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 256], help="points per batch")
    p.add_argument("--exact-max-dim", type=int, default=256, help="above: exact divergence = D x one VJP's time")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    return p.parse_args(argv)


def matched(record: dict) -> dict:
    """From a frontier record: the best F2D2 run at K = 1, the cheapest teacher solve at most as wrong and the
    reference's NFE (its dopri5 solve at the reference tolerance, f2d2's, with the reference's divergence)."""
    maps = [r for r in record["rows"] if r["solver"] == "flow map" and r["steps"] == 1]
    best = min(maps, key=lambda r: r["error_nats"])
    teacher = [r for r in record["rows"] if r["solver"] != "flow map"]
    as_good = [r for r in teacher if r["error_nats"] <= best["error_nats"]]
    solve = min(as_good, key=lambda r: r["seconds"]) if as_good else None
    div = "exact" if record["reference"]["probes"] == 0 else "hutchinson"
    refs = [r for r in teacher if r["solver"] == "dopri5" and r["impl"] == "f2d2" and r["div"] == div]
    ref = min(refs, key=lambda r: r["tol"])  # the tightest tolerance measured, nearest the reference's own
    return {"f2d2": best, "teacher": solve, "reference": ref}


def model_config(record: dict, image_size: int | None) -> dict:
    """The F2D2 run's model config from its checkpoint, at ``image_size`` for the U-Net."""
    cfg = dict(load_checkpoint(record["checkpoints"][matched(record)["f2d2"]["run"]])["config"]["model"])
    if image_size is not None:
        cfg["image_size"] = image_size
    return cfg


def costs(cfg: dict, batch: int, device: str, exact_max_dim: int) -> dict:
    """Seconds per point of: the K = 1 head likelihood; one teacher evaluation with a Hutchinson probe; one with
    the exact divergence (measured, or D x one vector-Jacobian product above ``exact_max_dim``)."""
    torch.manual_seed(0)
    f2d2 = build_model({**cfg, "div_head": True}).to(device).eval()
    teacher = build_model({**cfg, "div_head": False, "flow_map": False}).to(device).eval()
    x = torch.randn(batch, *f2d2.data_shape, device=device)
    t = torch.full((batch,), 0.5, device=device)
    dim = math.prod(f2d2.data_shape)

    def run(fn):
        def call():
            out = fn()
            return out[0].cpu() if isinstance(out, tuple) else out.log_prob.cpu()

        return timed(call, min_seconds=0.5)[1] / batch

    out = {"dim": dim, "batch": batch}
    out["f2d2_k1"] = run(lambda: log_likelihood(f2d2, x, 1, div="head"))
    out["nfe_hutchinson"] = run(lambda: divergence(lambda y: teacher.velocity(y, t), x, "hutchinson"))
    if dim <= exact_max_dim:
        out["nfe_exact"] = run(lambda: divergence(lambda y: teacher.velocity(y, t), x, "exact"))
        out["nfe_exact_estimated"] = False
    else:
        out["nfe_exact"] = dim * out["nfe_hutchinson"]
        out["nfe_exact_estimated"] = True
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    records = [json.loads(p.read_text()) for p in args.frontier]
    by_dim = {r["dim"]: r for r in records}
    if 2 not in by_dim or not any(d > 2 for d in by_dim):
        raise SystemExit(f"--frontier needs a 2D record and an image one; got dimensions {sorted(by_dim)}")
    image = by_dim[max(d for d in by_dim if d > 2)]
    sizes = [("2D", by_dim[2], None)] + [(f"{s}x{s}", image, s) for s in args.sizes]
    rows = []
    for name, record, size in sizes:
        m = matched(record)
        cfg = model_config(record, size)
        for batch in args.batches:
            c = costs(cfg, batch, args.device, args.exact_max_dim)
            row = {"size": name, **c, "trained": record["dim"] == c["dim"]}
            solve = m["teacher"]
            if solve is not None:
                row["teacher"] = solve["name"]
                row["teacher_seconds"] = solve["nfe"] * c[f"nfe_{solve['div']}"]
            ref = m["reference"]
            row["reference_nfe"] = ref["nfe"]
            row["reference_seconds"] = ref["nfe"] * c[f"nfe_{ref['div']}"]
            if row["trained"]:
                row["f2d2_error_nats"] = m["f2d2"]["error_nats"]
                row["teacher_error_nats"] = solve and solve["error_nats"]
            rows.append(row)
            print(f"[scaling] {name} batch {batch}: {c}", file=sys.stderr)
    print_table(rows)
    if args.out is not None:
        record = {
            "command": " ".join(sys.argv),
            "device": args.device,
            "threads": 1,
            "frontier": list(map(str, args.frontier)),
        }
        atomic_write_text(args.out, json.dumps({**record, "rows": rows}, indent=1) + "\n")
    return 0


def print_table(rows: list[dict]) -> None:
    print("1 exact eval: one teacher evaluation with the exact divergence over the K = 1 likelihood (*: D x one VJP)")
    print(
        f"{'size':6s} {'D':>5s} {'batch':>5s} {'K=1 ms/pt':>10s} {'teacher solve as accurate':34s} {'ms/pt':>9s} "
        f"{'ratio':>8s} {'ref NFE':>7s} {'ref ms/pt':>10s} {'ratio':>8s} {'1 exact eval':>12s}  accuracy (trained)"
    )
    for r in rows:
        k1 = r["f2d2_k1"] * 1e3
        teacher = r.get("teacher", "none")
        t_ms = r.get("teacher_seconds", math.nan) * 1e3
        ref_ms = r["reference_seconds"] * 1e3
        acc = ""
        if r["trained"]:
            acc = f"K=1 {r['f2d2_error_nats']:.3g} nats, teacher {r['teacher_error_nats'] or math.nan:.3g}"
        print(
            f"{r['size']:6s} {r['dim']:5d} {r['batch']:5d} {k1:10.4f} {teacher:34s} {t_ms:9.3f} {t_ms / k1:7.1f}x "
            f"{r['reference_nfe']:7d} {ref_ms:10.3f} {ref_ms / k1:7.0f}x {r['nfe_exact'] * 1e3 / k1:10.0f}x"
            f"{'*' if r['nfe_exact_estimated'] else ' '}  {acc}"
        )


if __name__ == "__main__":
    sys.exit(main())
