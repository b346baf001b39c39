"""Checkerboard benchmark of every method: few-step NLL, per-point error vs the reference, sample quality,
self-guidance and the K = 1 likelihood's speed against the reference solve, and each error split into its
endpoint part (where the steps land in the noise) and divergence part. Not a test: it prints numbers.

    python bench/checkerboard.py --config config/checkerboard.yaml --out results/bench [--device cuda]

Trains each stage of the config twice, once with maps trained in both time directions (the 2D
default, backward steps query u(x, s, t) with s > t) and once forward-only (backward steps use the
paper's first-order trick), reusing one teacher. Finished stages are reused on a rerun, so the
families can be trained by two processes (``--families two-way --train-only`` and
``--families forward-only --train-only``) and evaluated together by a third run. Writes
<out>/checkerboard.json with every number and the config and seeds behind it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from f2d2.config import experiment
from f2d2.config.resolve import ConfigError, apply_overrides, load_yaml, resolve_run
from f2d2.core.divergence import divergence
from f2d2.core.guidance import self_guided_noise
from f2d2.core.likelihood import LikelihoodResult, log_likelihood, reference_log_likelihood, standard_normal_log_prob
from f2d2.core.sampling import reference_sample, sample
from f2d2.data import make_dataset
from f2d2.eval.bpd import bits_per_dim
from f2d2.eval.metrics import nll_error, sliced_wasserstein, support_mass
from f2d2.io.atomic import atomic_write_text
from f2d2.io.checkpoint import load_checkpoint, load_model
from f2d2.preflight.runs import own_flow_source, own_flow_stages
from f2d2.training.loop import train

FAMILIES = {"two-way": True, "forward-only": False}


def train_stage(
    cfg, stage, family_root: Path, teacher_root: Path, device: str, progress: bool, extra: list[str]
) -> Path:
    """Train one stage into family_root/stage (the reference teacher always into teacher_root/<teacher>)."""
    teacher = experiment.reference_stage(cfg)
    root = teacher_root if stage == teacher else family_root
    work = root / stage
    ckpt = work / "checkpoint.pt"
    run = experiment.run_config(cfg, stage, stage_root=family_root)
    for sec, key in (("train", "init_from"), ("objective", "teacher")):
        if run[sec].get(key) == str(family_root / teacher / "checkpoint.pt"):
            run[sec][key] = str(teacher_root / teacher / "checkpoint.pt")
    overrides = [f"train.device={device}"]
    if stage != teacher:
        overrides.append(f"objective.two_way={'true' if family_root.name == 'two-way' else 'false'}")
    mine = [o.split(":", 1)[1] for o in extra if o.split("=", 1)[0].startswith(f"{stage}:")]
    common = [o for o in extra if ":" not in o.split("=", 1)[0]]
    run = resolve_run(apply_overrides(run, overrides + common + mine))
    if ckpt.exists() and load_checkpoint(ckpt)["step"] >= run["train"]["steps"]:
        return ckpt
    # wall time summed over the attempts (a resumed stage adds to what its earlier attempts took)
    seconds = work / "train_seconds.txt"
    before = float(seconds.read_text()) if ckpt.exists() and seconds.exists() else 0.0
    start = time.time()
    try:
        train(run, work, progress=progress)
    finally:
        atomic_write_text(seconds, f"{before + time.time() - start:.1f}\n")
    return ckpt


def order_stages(cfg, wanted: list[str] | None = None) -> list[str]:
    """Stages in dependency order: all of them, or ``wanted`` and what they need."""
    try:
        return experiment.stage_order(cfg, wanted)
    except ConfigError as e:
        raise SystemExit(f"--stages: {e}") from None


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("config/checkerboard.yaml"), help="experiment config")
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="output folder")
    p.add_argument("--device", default="cpu", help="torch device for training and evaluation")
    p.add_argument("--n-points", type=int, default=10000, help="held-out points and samples per evaluation")
    p.add_argument("--test-seed", type=int, default=12345, help="seed of the held-out points")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8], help="the K values")
    p.add_argument(
        "--guidance-lr",
        type=float,
        nargs=2,
        default=None,
        help="self-guidance Adam learning rate for K = 1 and for K > 1 (one Adam step); "
        "default: the config's eval.guidance lr_one_step and lr_multi_step",
    )
    p.add_argument(
        "--families",
        nargs="+",
        default=list(FAMILIES),
        choices=list(FAMILIES),
        help="which map families to train and evaluate",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of every stage's run config, e.g. train.steps=50 (a smoke run); "
        "STAGE:KEY=VALUE overrides one stage only",
    )
    p.add_argument(
        "--train-only",
        action="store_true",
        help="stop after training (e.g. one process per family); a later run evaluates",
    )
    p.add_argument(
        "--stages", nargs="+", default=None, help="train and evaluate only these stages (and the stages they need)"
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_yaml(args.config)
    if args.guidance_lr is None:
        g = cfg["eval"]["guidance"]
        args.guidance_lr = [g["lr_one_step"], g["lr_multi_step"]]
    dev = args.device
    data = make_dataset(resolve_run(cfg)["data"])
    x_test = data.sample(args.n_points, torch.Generator().manual_seed(args.test_seed)).to(dev)
    fresh = data.sample(args.n_points, torch.Generator().manual_seed(args.test_seed + 1))
    analytic = -data.log_prob(x_test.cpu()).double()
    dim = x_test.shape[1]
    result = {
        "config": str(args.config),
        "config_content": cfg,
        "device": dev,
        "torch": torch.__version__,
        "host": platform.node(),
        "n_points": args.n_points,
        "test_seed": args.test_seed,
        "analytic_mean_nll_nats": float(analytic.mean()),
        "analytic_mean_bpd": float(bits_per_dim(analytic, dim).mean()),
        "rows": [],
    }
    stages = order_stages(cfg, args.stages)
    ckpts = train_all(cfg, stages, args)
    if args.train_only:
        return 0

    reference = experiment.reference_stage(cfg)
    teacher = load_model(ckpts[(args.families[0], reference)], device=dev)
    noise = torch.randn(args.n_points, dim, generator=torch.Generator().manual_seed(7)).to(dev)
    result["reference"], ref = reference_row(teacher, data, x_test, analytic, noise, fresh)
    print(f"[bench] reference: {result['reference']}", file=sys.stderr)
    own_flow_runs = own_flow_stages(cfg)  # heads distilled from their own velocity
    for family in args.families:
        for stage in stages:
            if family != args.families[0] and stage == reference:
                continue
            model = load_model(ckpts[(family, stage)], device=dev)
            own_flow = None
            if stage in own_flow_runs:  # its own velocity's network: a stage here, or a checkpoint path
                source = own_flow_source(cfg, stage)
                own_flow = load_model(ckpts.get((family, source), source), device=dev)
            for row in method_rows(model, family, stage, own_flow, data, x_test, ref, analytic, noise, fresh, args):
                result["rows"].append(row)
                print(json.dumps(row), file=sys.stderr)

    f2d2_k1 = [r for r in result["rows"] if r["K"] == 1 and r["div"] == "head"]
    if f2d2_k1:
        model = load_model(ckpts[(args.families[0], f2d2_k1[0]["method"])], device=dev)
        result["speed"] = {**speed(model, teacher, x_test), "method": f2d2_k1[0]["method"]}
    result["train_seconds"] = {
        f"{f}/{s}": float((c.parent / "train_seconds.txt").read_text())
        if (c.parent / "train_seconds.txt").exists()
        else None
        for (f, s), c in ckpts.items()
    }
    atomic_write_text(args.out / "checkerboard.json", json.dumps(result, indent=1) + "\n")
    print_table(result)
    return 0


def train_all(cfg: dict, stages: list[str], args: argparse.Namespace) -> dict[tuple[str, str], Path]:
    """Train (or resume) every (family, stage); (family, stage) -> its checkpoint."""
    ckpts = {}
    for family in args.families:
        for stage in stages:
            ckpts[(family, stage)] = train_stage(
                cfg, stage, args.out / family, args.out / "two-way", args.device, not args.no_progress, args.overrides
            )
            print(f"[bench] trained {family}/{stage}", file=sys.stderr)
    return ckpts


def reference_row(teacher, data, x_test, analytic, noise, fresh) -> tuple[dict, LikelihoodResult]:
    """The teacher's dopri5 likelihood of the held-out points (and the solve itself, on the CPU), and its own
    dopri5 samples from ``noise``: the bound of what its distillates can reach."""
    ref, ref_seconds = timed(lambda: reference_log_likelihood(teacher, x_test))
    ref_nll = -ref.log_prob.cpu().double()
    ref_samples = reference_sample(teacher, noise).cpu()
    row = {
        "mean_nll_nats": float(ref_nll.mean()),
        "mean_bpd": float(bits_per_dim(ref_nll, x_test.shape[1]).mean()),
        "mean_abs_err_vs_analytic": nll_error(ref_nll, analytic),
        "mean_nll_gap_vs_analytic": float(ref_nll.mean() - analytic.mean()),
        "nfe": ref.nfe,
        "seconds": ref_seconds,
        "support_mass": support_mass(data.log_prob(ref_samples)),
        "sliced_w2": sliced_wasserstein(ref_samples, fresh),
    }
    return row, LikelihoodResult(ref.log_prob.cpu().double(), ref.x0.cpu().double(), ref.nfe)


def error_split(res: LikelihoodResult, ref: LikelihoodResult) -> dict:
    """Where a few-step NLL's error comes from, per point against the reference solve ``ref`` (CPU, float64):
    log p(x1) = log N(x0) - integral of div, so |error| <= |endpoint part| + |divergence part|, each averaged.

    ``x0_dist_vs_reference``: mean ||x0 - x0_ref||, how far the map's steps land from the reference's noise."""
    x0, lp = res.x0.cpu().double(), res.log_prob.cpu().double()
    end, end_ref = standard_normal_log_prob(x0), standard_normal_log_prob(ref.x0)
    return {
        "x0_dist_vs_reference": float((x0 - ref.x0).reshape(len(x0), -1).norm(dim=1).mean()),
        "endpoint_err_vs_reference": nll_error(end, end_ref),
        "divergence_err_vs_reference": nll_error(lp - end, ref.log_prob - end_ref),
    }


def method_rows(model, family, stage, own_flow, data, x_test, ref, analytic, noise, fresh, args) -> list[dict]:
    """One row per K: the K-step NLL's errors, and the K-step samples' quality (with self-guidance for F2D2).

    ``own_flow``: None, or the network whose velocity's divergence the head learned (div_source: self; the model
    itself or its frozen warm start, ``experiment.own_flow_source``): the error against that flow's reference
    is reported too."""
    div = "head" if model.has_div_head else "exact"
    own_ref = None if own_flow is None else -reference_log_likelihood(own_flow, x_test).log_prob.cpu().double()
    backward = "two-way" if family == "two-way" else "forward-only"
    rows = []
    for k in args.steps:
        res, secs = timed(lambda k=k: log_likelihood(model, x_test, k, div=div, backward=backward))
        nll = -res.log_prob.cpu().double()
        row = {
            "family": family,
            "method": stage,
            "K": k,
            "div": div,
            "mean_nll_nats": float(nll.mean()),
            "mean_bpd": float(bits_per_dim(nll, x_test.shape[1]).mean()),
            "abs_err_vs_reference": nll_error(nll, -ref.log_prob),
            "abs_err_vs_analytic": nll_error(nll, analytic),
            **error_split(res, ref),
            "nll_seconds": secs,
        }
        if own_ref is not None:
            row["abs_err_vs_own_reference"] = nll_error(nll, own_ref)
        for guided in [False, True] if model.has_div_head else [False]:
            z = noise
            if guided:
                lr = args.guidance_lr[0] if k == 1 else args.guidance_lr[1]
                z = self_guided_noise(model, noise, lr=lr, steps=1)
            xs = sample(model, z, k).cpu()
            tag = "guided_" if guided else ""
            row[f"{tag}support_mass"] = support_mass(data.log_prob(xs))
            row[f"{tag}sliced_w2"] = sliced_wasserstein(xs, fresh)
        rows.append(row)
    return rows


def speed(model, teacher, x_test) -> dict:
    """The K = 1 F2D2 likelihood of ``x_test`` and the teacher's reference solve, timed back to back."""
    _, k1_seconds = timed(lambda: log_likelihood(model, x_test, 1, div="head"))
    ref_again, ref_seconds = timed(lambda: reference_log_likelihood(teacher, x_test))
    # One right-hand side of the reference ODE (velocity and exact divergence) at t = 1: the ratio is
    # about (reference NFE) x (one right-hand side / one K = 1 pass).
    ones = torch.ones(len(x_test), device=x_test.device)
    _, rhs_seconds = timed(lambda: divergence(lambda y: teacher.velocity(y, ones), x_test, "exact"))
    return {
        "k1_seconds": k1_seconds,
        "reference_seconds": ref_seconds,
        "reference_nfe": ref_again.nfe,
        "reference_rhs_seconds": rhs_seconds,
        "ratio": ref_seconds / k1_seconds,
        "threads": torch.get_num_threads(),
    }


def print_table(result: dict) -> None:
    """Everything in one printout: the reference, every row, a method x K error table, the speed ratio and the
    training wall time of each stage."""
    ref = result["reference"]
    print(
        f"analytic mean NLL {result['analytic_mean_nll_nats']:.4f} nats "
        f"({result['analytic_mean_bpd']:.4f} bits/dim); reference (dopri5) {ref['mean_nll_nats']:.4f} "
        f"nats, mean NLL - analytic {ref['mean_nll_gap_vs_analytic']:.4f}, per point "
        f"{ref['mean_abs_err_vs_analytic']:.4f}, NFE {ref['nfe']}; "
        f"teacher dopri5 samples: mass {ref['support_mass']:.3f}, SW2 {ref['sliced_w2']:.3f}"
    )
    print(
        f"{'family':13s} {'method':22s} {'K':>2s} {'NLL':>8s} {'bpd':>7s} {'|err| ref':>9s} {'mass':>6s} {'SW2':>6s} "
        f"{'g.mass':>6s} {'g.SW2':>6s}"
    )
    for r in result["rows"]:
        g = f"{r['guided_support_mass']:6.3f} {r['guided_sliced_w2']:6.3f}" if "guided_support_mass" in r else ""
        own = f" (vs its own flow {r['abs_err_vs_own_reference']:.4f})" if "abs_err_vs_own_reference" in r else ""
        print(
            f"{r['family']:13s} {r['method']:22s} {r['K']:2d} {r['mean_nll_nats']:8.4f} {r['mean_bpd']:7.4f} "
            f"{r['abs_err_vs_reference']:9.4f} {r['support_mass']:6.3f} {r['sliced_w2']:6.3f} {g}{own}"
        )
    print_error_table(result["rows"])
    print_split_table(result["rows"])
    if "speed" in result:
        s = result["speed"]
        print(
            f"K=1 F2D2 likelihood ({s['method']}) {s['k1_seconds'] * 1e3:.2f} ms vs reference "
            f"{s['reference_seconds']:.3f} s: {s['ratio']:.0f}x faster; the reference took {s['reference_nfe']} "
            f"NFE, one costs {s['reference_rhs_seconds'] / s['k1_seconds']:.2f} K = 1 passes"
        )
    times = ", ".join(f"{k} {v:.0f} s" for k, v in result["train_seconds"].items() if v is not None)
    print(f"training wall time per stage: {times}")


def print_error_table(rows: list[dict]) -> None:
    """Mean per-point |NLL - reference NLL| (nats): one line per family and method, one column per K."""
    ks = sorted({r["K"] for r in rows})
    table: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        table.setdefault((r["family"], r["method"]), {})[r["K"]] = r["abs_err_vs_reference"]
        if "abs_err_vs_own_reference" in r:
            table.setdefault((r["family"], f"{r['method']} (own flow)"), {})[r["K"]] = r["abs_err_vs_own_reference"]
    print("mean per-point |NLL - reference NLL| (nats)")
    print(f"{'family':13s} {'method':34s} " + " ".join(f"{'K=' + str(k):>7s}" for k in ks))
    for (family, method), errs in table.items():
        cells = " ".join(f"{errs[k]:7.4f}" if k in errs else f"{'-':>7s}" for k in ks)
        print(f"{family:13s} {method:34s} {cells}")


def print_split_table(rows: list[dict]) -> None:
    """The error's two parts per method and K (``error_split``): endpoint / divergence, and the endpoint distance."""
    ks = sorted({r["K"] for r in rows})
    print("error split vs the reference (nats): endpoint part / divergence part [mean ||x0 - x0_ref||]")
    print(f"{'family':13s} {'method':22s} " + " ".join(f"{'K=' + str(k):>22s}" for k in ks))
    table: dict[tuple[str, str], dict[int, dict]] = {}
    for r in rows:
        table.setdefault((r["family"], r["method"]), {})[r["K"]] = r
    for (family, method), by_k in table.items():
        cells = " ".join(
            f"{by_k[k]['endpoint_err_vs_reference']:.4f}/{by_k[k]['divergence_err_vs_reference']:.4f} "
            f"[{by_k[k]['x0_dist_vs_reference']:.3f}]"
            if k in by_k
            else f"{'-':>22s}"
            for k in ks
        )
        print(f"{family:13s} {method:22s} {cells}")


if __name__ == "__main__":
    sys.exit(main())
