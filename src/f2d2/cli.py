"""The ``f2d2`` command line: train, nll, sample, data. Each subcommand stands alone.

Points files are ``.npy`` or ``.csv`` arrays of shape (N, dim). Times run from
t = 0 (noise) to t = 1 (data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, load_checkpoint, load_model
from .config import ConfigError, apply_overrides, load_yaml, resolve_run
from .data import DataError, load_points, make_dataset
from .fileio import atomic_path, atomic_write_text
from .guidance import self_guided_noise
from .flowmap import BACKWARD_MODES, DIVERGENCE_SOURCES
from .likelihood import bits_per_dim, log_likelihood, reference_log_likelihood
from .metrics import sliced_wasserstein, support_mass
from .sampling import sample


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="f2d2", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one stage of an experiment config", description=(
        "Train one run. The run config is the experiment file's shared sections merged with "
        "stages.<STAGE>; re-running on the same --workdir resumes from its checkpoint."))
    t.add_argument("--config", required=True, type=Path, help="experiment YAML file")
    t.add_argument("--stage", default=None, help="name under the config's 'stages' to train (default: none)")
    t.add_argument("--workdir", required=True, type=Path, help="folder for checkpoint.pt, metrics.jsonl, config.yaml")
    t.add_argument("--stage-root", type=Path, default=None,
                   help="folder holding one workdir per stage, for stage names used as train.init_from or "
                        "objective.teacher (default: the parent of --workdir)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-config value after stage merging, e.g. train.steps=100 (repeatable)")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    n = sub.add_parser("nll", help="per-point negative log-likelihood of points under a checkpoint", description=(
        "Integrate from data (t = 1) to noise (t = 0): --steps K uniform flow-map/Euler steps, or --reference "
        "for the adaptive dopri5 solve with the instantaneous velocity. Writes one row per point."))
    n.add_argument("--checkpoint", required=True, type=Path, help="f2d2 checkpoint.pt")
    n.add_argument("--points", required=True, type=Path, help=".npy or .csv of shape (N, dim) to evaluate")
    n.add_argument("--out", required=True, type=Path, help="output .csv (columns nll_nats, bpd[, ...]) or .npy")
    how = n.add_mutually_exclusive_group(required=True)
    how.add_argument("--steps", type=_positive_int, help="K, the number of steps")
    how.add_argument("--reference", action="store_true", help="adaptive dopri5 solve (the yardstick)")
    n.add_argument("--div", choices=DIVERGENCE_SOURCES, default=None,
                   help="divergence source: 'head' (F2D2, default when the model has one) or 'exact' / "
                        "'hutchinson' of the instantaneous velocity (default otherwise; the reference uses exact)")
    n.add_argument("--backward", choices=BACKWARD_MODES, default="two-way",
                   help="how a flow map takes backward steps: query u(x, s, t) with s > t ('two-way') or reuse "
                        "the forward map of the reversed interval ('forward-only', the paper's first-order trick)")
    n.add_argument("--atol", type=float, default=1e-5, help="reference solver absolute tolerance")
    n.add_argument("--rtol", type=float, default=1e-5, help="reference solver relative tolerance")
    n.add_argument("--batch-size", type=_positive_int, default=10000, help="points per batch")
    n.add_argument("--seed", type=int, default=0, help="seed of Hutchinson probes")
    n.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    n.add_argument("--compare", type=Path, default=None,
                   help="a previous nll output (e.g. the reference) to report mean |NLL - NLL_compare| against")
    n.add_argument("--summary", type=Path, default=None, help="also write the printed summary as JSON here")
    n.add_argument("--device", default="cpu", help="torch device to evaluate on, e.g. cpu or cuda")

    s = sub.add_parser("sample", help="draw samples with K steps", description=(
        "Push N(0, I) noise (t = 0) to data (t = 1) with K uniform steps of the checkpoint's flow map "
        "(Euler steps of its velocity for a flow-matching model)."))
    s.add_argument("--checkpoint", required=True, type=Path, help="f2d2 checkpoint.pt")
    s.add_argument("--n", required=True, type=_positive_int, help="number of samples")
    s.add_argument("--steps", required=True, type=_positive_int, help="K, the number of steps")
    s.add_argument("--out", required=True, type=Path, help="output .npy or .csv of shape (N, dim)")
    s.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    s.add_argument("--guidance-steps", type=int, default=0,
                   help="maximum-likelihood self-guidance: Adam steps on the noise before sampling (F2D2 models; "
                        "default 0 = off)")
    s.add_argument("--guidance-lr", type=float, default=None, help="learning rate of the self-guidance Adam steps")
    s.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--metrics", type=Path, default=None,
                   help="also write sample-quality metrics as JSON here: sliced W2 to fresh data of the checkpoint's "
                        "dataset and, for analytic datasets, the share of samples on the support")
    s.add_argument("--device", default="cpu", help="torch device to sample on, e.g. cpu or cuda")

    d = sub.add_parser("data", help="draw points from a config's dataset (e.g. a held-out test set)")
    d.add_argument("--config", required=True, type=Path, help="experiment YAML file (its data section is used)")
    d.add_argument("--n", required=True, type=_positive_int, help="number of points")
    d.add_argument("--seed", type=int, required=True, help="seed; use one that no training run uses")
    d.add_argument("--out", required=True, type=Path, help="output .npy or .csv of shape (N, dim)")
    return p


def write_array(path: Path, array: np.ndarray, header: list[str] | None = None) -> None:
    """Write (N, k) or (N,) to .npy or .csv atomically."""
    if path.suffix == ".npy":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array)
    elif path.suffix == ".csv":
        arr = array.reshape(len(array), -1)
        names = header or [f"x{i}" for i in range(arr.shape[1])]
        lines = [",".join(names)] + [",".join(f"{v:.9g}" for v in row) for row in arr]
        atomic_write_text(path, "\n".join(lines) + "\n")
    else:
        raise ValueError(f"output file {path} must end in .npy or .csv")


def _check_out(path: Path) -> None:
    if path.suffix not in (".npy", ".csv"):
        raise ValueError(f"output file {path} must end in .npy or .csv, got {path.suffix!r}")


def cmd_train(args: argparse.Namespace) -> None:
    from .train import train

    cfg = load_yaml(args.config)
    root = args.stage_root if args.stage_root is not None else args.workdir.parent
    run = apply_overrides(resolve_run(cfg, args.stage, stage_root=root), args.overrides)
    run = resolve_run(run)  # re-check values after the overrides
    ckpt = train(run, args.workdir, progress=not args.no_progress)
    print(f"checkpoint: {ckpt}")


def cmd_nll(args: argparse.Namespace) -> None:
    _check_out(args.out)
    ckpt_cfg = load_checkpoint(args.checkpoint)["config"]
    model = load_model(args.checkpoint, ema=not args.raw, device=args.device)
    dim = int(np.prod(model.data_shape))
    points = load_points(args.points, dim=dim)
    div = args.div or ("exact" if args.reference or not model.has_div_head else "head")
    if div == "head" and not model.has_div_head:
        raise ValueError(f"--div head needs a checkpoint with a divergence head; {args.checkpoint} has none")
    compare = None
    if args.compare is not None:
        compare = _read_nll(args.compare)
        if len(compare) != len(points):
            raise ValueError(f"--compare {args.compare} has {len(compare)} rows; the points have {len(points)}")
    gen = torch.Generator(args.device).manual_seed(args.seed)
    logps, nfe = [], 0
    start = time.perf_counter()
    for chunk in points.split(args.batch_size):
        chunk = chunk.to(args.device)
        if args.reference:
            res = reference_log_likelihood(model, chunk, atol=args.atol, rtol=args.rtol, div=div, generator=gen)
        else:
            res = log_likelihood(model, chunk, args.steps, div=div, backward=args.backward, generator=gen)
        logps.append(res.log_prob.cpu())
        nfe += res.nfe
    seconds = time.perf_counter() - start
    nll = -torch.cat(logps).double()
    bpd = bits_per_dim(nll, dim)
    columns, names = [nll, bpd], ["nll_nats", "bpd"]
    analytic = None
    data = make_dataset(ckpt_cfg["data"]) if ckpt_cfg["data"]["name"] != "points" else None
    if data is not None and data.has_density:
        analytic = -data.log_prob(points).double()
        columns.append(analytic)
        names.append("analytic_nll_nats")
    write_array(args.out, torch.stack(columns, 1).numpy(), names)
    summary = {
        "checkpoint": str(args.checkpoint),
        "train_seed": ckpt_cfg["seed"],
        "points": str(args.points),
        "n": len(points),
        "solver": "dopri5" if args.reference else f"{args.steps}-step",
        "div": div,
        "backward": None if args.reference else args.backward,
        "mean_nll_nats": float(nll.mean()),
        "mean_bpd": float(bpd.mean()),
        "nfe": nfe,
        "seconds": round(seconds, 4),
    }
    if analytic is not None:
        summary["analytic_mean_nll_nats"] = float(analytic.mean())
        summary["analytic_mean_bpd"] = float(bits_per_dim(analytic, dim).mean())
    if compare is not None:
        summary["mean_abs_err_nats"] = float((nll - compare).abs().mean())
    text = json.dumps(summary, indent=1)
    print(text)
    if args.summary is not None:
        atomic_write_text(args.summary, text + "\n")


def _read_nll(path: Path) -> torch.Tensor:
    """The nll_nats column of a file written by ``f2d2 nll``."""
    if path.suffix == ".npy":
        arr = np.load(path)
        return torch.from_numpy(np.asarray(arr).reshape(len(arr), -1)[:, 0]).double()
    header = path.read_text().splitlines()[0].split(",")
    if "nll_nats" not in header:
        raise ValueError(f"{path} has no nll_nats column (columns: {header}); expected a file written by f2d2 nll")
    arr = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return torch.from_numpy(arr[:, header.index("nll_nats")]).double()


def cmd_sample(args: argparse.Namespace) -> None:
    _check_out(args.out)
    if args.guidance_steps and args.guidance_lr is None:
        raise ValueError("--guidance-steps needs --guidance-lr")
    model = load_model(args.checkpoint, ema=not args.raw, device=args.device)
    gen = torch.Generator(args.device).manual_seed(args.seed)
    x0 = torch.randn((args.n, *model.data_shape), generator=gen, device=args.device)
    start = time.perf_counter()
    if args.guidance_steps:
        x0 = self_guided_noise(model, x0, lr=args.guidance_lr, steps=args.guidance_steps)
    x1 = sample(model, x0, args.steps)
    seconds = time.perf_counter() - start
    write_array(args.out, x1.cpu().numpy())
    ckpt_cfg = load_checkpoint(args.checkpoint)["config"]
    summary = {"checkpoint": str(args.checkpoint), "n": args.n, "steps": args.steps, "seed": args.seed,
               "train_seed": ckpt_cfg["seed"], "guidance_steps": args.guidance_steps,
               "guidance_lr": args.guidance_lr, "seconds": round(seconds, 4)}
    if args.metrics is not None:
        summary.update(_sample_quality(ckpt_cfg["data"], x1.cpu(), args.seed))
        atomic_write_text(args.metrics, json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


def _sample_quality(data_cfg: dict, samples: torch.Tensor, seed: int) -> dict:
    """Sliced W2 to as many fresh data points (seeded apart from the noise) and, if analytic, the support mass."""
    data = make_dataset(data_cfg)
    fresh = data.sample(len(samples), torch.Generator().manual_seed(seed + 1_000_003))
    out = {"sliced_w2": sliced_wasserstein(samples, fresh, seed=seed)}
    if data.has_density:
        out["support_mass"] = support_mass(data.log_prob(samples))
    return out


def cmd_data(args: argparse.Namespace) -> None:
    _check_out(args.out)
    data = make_dataset(resolve_run(load_yaml(args.config))["data"])
    points = data.sample(args.n, torch.Generator().manual_seed(args.seed))
    write_array(args.out, points.numpy())
    print(f"wrote {args.n} points to {args.out}")


COMMANDS = {"train": cmd_train, "nll": cmd_nll, "sample": cmd_sample, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ConfigError, DataError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"f2d2 {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
