"""Implementations of the ``f2d2`` subcommands train, nll, sample, importance, eval, data, fid-reference,
import-meanflow and export (``f2d2.cli.parser`` parses them; ``f2d2.cli.dispatch`` calls ``cmd_<name>``).

Kept apart from the parser so that ``f2d2 submit`` and ``--help`` start without importing torch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from f2d2.api import load as api_load
from f2d2.api import sample as api_sample
from f2d2.cli.parser import cell_namespaces
from f2d2.config.resolve import ConfigError, apply_overrides, load_yaml, resolve_run
from f2d2.core.guidance import Guidance
from f2d2.core.likelihood import check_tolerances, log_likelihood, reference_log_likelihood
from f2d2.core.options import divergence_for
from f2d2.core.sampling import sample_in_batches
from f2d2.data import SEED_STRIDE, DataError, ImageDataset, load_points, make_dataset
from f2d2.eval import importance
from f2d2.eval.bpd import bits_per_dim
from f2d2.eval.fid import FIDError, build_extractor, extractor_info, fid_to_reference, reference_stats, to_pixels
from f2d2.eval.metrics import nll_error, sliced_wasserstein, support_mass
from f2d2.eval.nll import points_nll
from f2d2.io import meanflow
from f2d2.io.arrays import check_out_suffix, load_images, read_nll, write_array
from f2d2.io.atomic import DiskFull, atomic_write_text
from f2d2.io.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from f2d2.io.export import export_model
from f2d2.io.meanflow import MeanFlowCheckpointError
from f2d2.objectives import options_reference
from f2d2.preflight.checks import check_run
from f2d2.training.failures import OutOfMemory, TrainingError, explain_out_of_memory
from f2d2.training.loop import train

USER_ERRORS = (
    DiskFull,
    ConfigError,
    DataError,
    CheckpointError,
    TrainingError,
    OutOfMemory,
    FIDError,
    MeanFlowCheckpointError,
    ValueError,
    FileNotFoundError,
)


def cmd_train(args: argparse.Namespace) -> None:
    """``f2d2 train``: resolve the stage's run config (with --set overrides), check it and train it into --workdir."""
    cfg = load_yaml(args.config)
    root = args.stage_root if args.stage_root is not None else args.workdir.parent
    run = apply_overrides(resolve_run(cfg, args.stage, stage_root=root), args.overrides)
    run = resolve_run(run)  # re-check values after the overrides
    check_run(run)
    start = time.perf_counter()
    batch, device = run["train"]["batch_size"], run["train"]["device"]
    with explain_out_of_memory(
        f"training on {device} with train.batch_size = {batch}",
        f"lower train.batch_size (e.g. --set train.batch_size={max(1, batch // 2)}, in a fresh "
        "--workdir), use a smaller model, or spread the batch over more GPUs",
    ):
        ckpt = train(run, args.workdir, progress=not args.no_progress, restart_on_change=args.restart_on_change)
    print(f"checkpoint: {ckpt}")
    if args.summary is not None:
        lines = (args.workdir / "metrics.jsonl").read_text().splitlines()
        summary = {
            "checkpoint": str(ckpt),
            "config": str(args.config),
            "stage": args.stage,
            "overrides": args.overrides,
            "seed": run["seed"],
            "steps": run["train"]["steps"],
            "seconds_this_call": round(time.perf_counter() - start, 3),
            "last_log": json.loads(lines[-1]) if lines else None,
        }
        saved = load_checkpoint(ckpt)
        summary.update({k: saved[k] for k in ("early_stopped", "kept_best") if k in saved})
        atomic_write_text(args.summary, json.dumps(summary, indent=1) + "\n")


def cmd_nll(args: argparse.Namespace) -> None:
    """``f2d2 nll``: per-point NLL (nats) and BPD of --points (N, dim) or images (N, C, H, W), integrated from
    the data (t = 1) back to noise (t = 0) in --steps flow-map steps or by the adaptive reference solve."""
    check_nll_args(args)
    nll_cell(*_load(args), args)


def cmd_sample(args: argparse.Namespace) -> None:
    """``f2d2 sample``: --n samples (n, *data_shape) from noise x0 (t = 0) to data (t = 1) in --steps steps or by
    the adaptive reference solve, optionally self-guided; with --metrics their sample quality, with --log-prob
    their log-density."""
    check_sample_args(args)
    model, ckpt_cfg = _load(args)
    check_sample_model(args, model)
    sample_cell(model, ckpt_cfg, args)


def cmd_importance(args: argparse.Namespace) -> None:
    """``f2d2 importance``: self-normalised importance sampling of a 2D target with --n samples and their log q
    (``importance_cell``)."""
    check_importance_args(args)
    importance_cell(*_load(args), args)


def check_importance_args(args: argparse.Namespace) -> None:
    """What an importance cell's arguments alone can get wrong, before loading anything: --out and --target-fn."""
    if args.out.suffix != ".json":
        raise ValueError(f"--out {args.out}: the importance cell is a .json file")
    if args.target_fn:
        importance.function_target(args.target_fn)


def importance_cell(model: torch.nn.Module, ckpt_cfg: dict, args: argparse.Namespace) -> dict:
    """One importance cell of a loaded 2D model (``f2d2 importance``'s arguments): --n samples (n, d) and their log q
    from --steps K forward steps or the dopri5 reference (``f2d2.sample(..., log_prob=True)``, ``timed_samples``),
    self-normalised importance sampling of the target with them (``f2d2.eval.importance``); writes the JSON cell
    --out and returns it, its ``seconds`` timing the sampling and log q."""
    if args.target_fn:
        target = importance.function_target(args.target_fn)
    elif ckpt_cfg["data"]["name"] == "checkerboard":
        target = importance.checkerboard_target(ckpt_cfg["data"].get("scale", 2.0))
    else:
        raise ValueError(
            f"--target checkerboard: {args.checkpoint} was trained on {ckpt_cfg['data']['name']!r} data; give your "
            "own density as --target-fn package.module:function"
        )
    if len(model.data_shape) != 1 or model.data_shape[0] < 2:
        raise ValueError(
            f"{args.checkpoint} models data of shape {tuple(model.data_shape)}; importance sampling takes "
            "points (d >= 2)"
        )
    try:
        div = divergence_for(args.div, has_head=model.has_div_head, adaptive=args.reference)
    except ValueError as e:
        raise ValueError(f"--div {args.div}: {e} (checkpoint {args.checkpoint})") from None
    with explain_out_of_memory(
        f"on {args.device} drawing --batch-size {args.batch_size} samples at once",
        f"lower --batch-size (e.g. {max(1, args.batch_size // 2)})",
    ):
        x, log_q, seconds = timed_samples(
            model,
            args.n,
            None if args.reference else args.steps,
            generator=torch.Generator(args.device).manual_seed(args.seed),
            div=div,
            log_prob_from=args.log_prob_from,
            batch_size=args.batch_size,
        )
    cell = {
        "checkpoint": str(args.checkpoint),
        "train_seed": ckpt_cfg["seed"],
        "target": target.name,
        "n": args.n,
        "seed": args.seed,
        "steps": args.steps,
        "solver": "dopri5" if args.reference else f"{args.steps}-step",
        "div": div,
        "log_prob_from": args.log_prob_from,
        "seconds": round(seconds, 6),
        **importance.snis(x, log_q, target),
    }
    text = json.dumps(cell, indent=1)
    print(text)
    atomic_write_text(args.out, text + "\n")
    return cell


def timed_samples(
    model: torch.nn.Module,
    n: int,
    steps: int | None,
    *,
    generator: torch.Generator,
    div: str | None = None,
    log_prob_from: str = "noise",
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(x (n, *data_shape), log q (n,), wall seconds) of ``f2d2.sample(model, n, steps, log_prob=True)`` with noise
    from ``generator`` (steps=None: the dopri5 reference). A draw from a generator of its own comes first, so that
    one-time set-up (the solver's import, the first call's allocations) is off the clock: n samples for K steps
    (in 2D the first draw of 2,000 took ~3 ms more, most of a one-step proposal's time), one for the reference
    (whose seconds dwarf it)."""

    def draw(count: int, gen: torch.Generator):
        return api_sample(
            model,
            count,
            steps,
            log_prob=True,
            div=div,
            log_prob_from=log_prob_from,
            generator=gen,
            batch_size=batch_size,
        )

    def synchronize() -> None:  # CUDA runs asynchronously: wait for it before reading the clock
        if generator.device.type == "cuda":
            torch.cuda.synchronize(generator.device)

    draw(1 if steps is None else n, torch.Generator(generator.device).manual_seed(0))
    synchronize()
    start = time.perf_counter()
    x, log_q = draw(n, generator)
    synchronize()
    return x, log_q, time.perf_counter() - start


def cmd_eval(args: argparse.Namespace) -> None:
    """``f2d2 eval``: the checkpoint loaded once, then each --cell computed and written as its own ``f2d2 nll``,
    ``f2d2 sample`` or ``f2d2 importance`` would (same files, same seeds); --record lists every cell's ``seconds``
    (its summary's: the computation alone) and ``cell_seconds`` (the whole cell: reading its inputs, computing, its
    metrics, writing)."""
    cells = cell_namespaces(args)
    for cell in cells:  # every cell's arguments before any work
        CELL_CHECKS[cell.command](cell)
    model, ckpt_cfg = _load(args)
    for cell in cells:
        if cell.command == "sample":
            check_sample_model(cell, model)
    record = {"checkpoint": str(args.checkpoint), "cells": []}
    for cell in cells:
        start = time.perf_counter()
        summary = CELLS[cell.command](model, ckpt_cfg, cell)
        record["cells"].append(
            {
                "command": cell.command,
                "out": str(cell.out),
                "seconds": summary["seconds"],
                "cell_seconds": round(time.perf_counter() - start, 4),
            }
        )
    for key in ("seconds", "cell_seconds"):
        record[key] = round(sum(c[key] for c in record["cells"]), 4)
    if args.record is not None:
        atomic_write_text(args.record, json.dumps(record, indent=1) + "\n")


def _load(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The model of --checkpoint (EMA weights unless --raw) on --device, and the config it was trained with."""
    ckpt_cfg = load_checkpoint(args.checkpoint)["config"]
    return load_model(args.checkpoint, ema=not args.raw, device=args.device), ckpt_cfg


def check_nll_args(args: argparse.Namespace) -> None:
    """What an nll cell's arguments alone can get wrong, before loading anything."""
    check_out_suffix(args.out)
    if args.reference:
        check_tolerances(args.atol, args.rtol)
    if args.solver is not None:
        if args.reference:
            raise ValueError(f"--solver {args.solver} takes --steps K fixed steps; --reference is the dopri5 solve")
        if args.div == "head":
            raise ValueError(
                f"--solver {args.solver} integrates the velocity's divergence; --div head (the F2D2 head) "
                "goes with flow-map steps: leave out --solver, or use --div exact or hutchinson"
            )


def nll_solver(args: argparse.Namespace) -> str:
    """The "solver" an nll cell's summary records: dopri5, "<K>-step" (flow-map or Euler) or "<K>-step <method>"."""
    if args.reference:
        return "dopri5"
    return f"{args.steps}-step" + (f" {args.solver}" if args.solver else "")


def check_sample_args(args: argparse.Namespace) -> None:
    """What a sample cell's arguments alone can get wrong, before loading anything."""
    check_out_suffix(args.out)
    if args.guidance_steps and args.guidance_lr is None:
        raise ValueError("--guidance-steps needs --guidance-lr")
    if args.div is not None and not args.log_prob:
        raise ValueError(f"--div {args.div} chooses the divergence of --log-prob; it needs --log-prob")
    if args.log_prob_from != "noise" and not args.log_prob:
        raise ValueError(
            f"--log-prob-from {args.log_prob_from} chooses how --log-prob is computed; it needs --log-prob"
        )
    if args.reference:
        check_tolerances(args.atol, args.rtol)


def check_sample_model(args: argparse.Namespace, model: torch.nn.Module) -> None:
    """Image samples' FID (--metrics with --fid-stats) needs the statistics file and the extractor, --log-prob a
    divergence the model serves: fail before sampling."""
    _sample_div(args, model)
    if args.metrics is not None and len(model.data_shape) == 3 and args.fid_stats is not None:
        if not args.fid_stats.is_file():
            raise ValueError(
                f"--fid-stats {args.fid_stats} is not a file; expected reference statistics from f2d2 fid-reference"
            )
        build_extractor(args.fid_extractor, args.fid_weights_dir)


def nll_cell(model: torch.nn.Module, ckpt_cfg: dict, args: argparse.Namespace) -> dict:
    """One NLL cell of a loaded model (``f2d2 nll``'s arguments): writes --out (and --summary); returns the
    summary, whose ``seconds`` time the likelihood computation alone."""
    dim = int(np.prod(model.data_shape))
    images = len(model.data_shape) == 3
    points = load_images(args.points, model.data_shape) if images else load_points(args.points, dim=dim)
    try:
        div = divergence_for(args.div, has_head=model.has_div_head, adaptive=args.reference or bool(args.solver))
    except ValueError as e:
        raise ValueError(f"--div {args.div}: {e} (checkpoint {args.checkpoint})") from None
    compare = None
    if args.compare is not None:
        compare = read_nll(args.compare)
        if len(compare) != len(points):
            raise ValueError(f"--compare {args.compare} has {len(compare)} rows; the points have {len(points)}")
    gen = torch.Generator(args.device).manual_seed(args.seed)
    # one dequantization noise per image, the same in every cell (per-sample errors compare like with like)
    dequant = torch.Generator().manual_seed(args.dequant_seed)
    if args.reference or args.solver:
        import torchdiffeq  # noqa: F401  (the solver's import, before the clock starts)

        method = args.solver or "dopri5"
        steps = args.steps if args.solver else None

        def likelihood(x):
            return reference_log_likelihood(
                model, x, method=method, steps=steps, atol=args.atol, rtol=args.rtol, div=div, generator=gen
            )
    else:

        def likelihood(x):
            return log_likelihood(model, x, args.steps, div=div, backward=args.backward, generator=gen)

    start = time.perf_counter()
    with explain_out_of_memory(
        f"on {args.device} with --batch-size {args.batch_size}",
        f"lower --batch-size (e.g. {max(1, args.batch_size // 2)})",
    ):
        # images: nats of the 8-bit pixels (f2d2.eval.bpd)
        nll, nfe = points_nll(
            points, likelihood, model.data_shape, batch_size=args.batch_size, device=args.device, dequant=dequant
        )
    seconds = time.perf_counter() - start
    bpd = bits_per_dim(nll, dim)
    columns, names = [nll, bpd], ["nll_nats", "bpd"]
    analytic = None
    data = make_dataset(ckpt_cfg["data"]) if ckpt_cfg["data"]["name"] != "points" and not images else None
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
        "solver": nll_solver(args),
        "div": div,
        "backward": None if args.reference or args.solver else args.backward,
        "mean_nll_nats": float(nll.mean()),
        "mean_bpd": float(bpd.mean()),
        "dequantized": images,
        "nfe": nfe,
        "seconds": round(seconds, 4),
    }
    if analytic is not None:
        summary["analytic_mean_nll_nats"] = float(analytic.mean())
        summary["analytic_mean_bpd"] = float(bits_per_dim(analytic, dim).mean())
    if compare is not None:
        summary["mean_abs_err_nats"] = nll_error(nll, compare)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.summary is not None:
        atomic_write_text(args.summary, text + "\n")
    return summary


def _sample_div(args: argparse.Namespace, model: torch.nn.Module) -> str | None:
    """The divergence of a sample cell's --log-prob (None without it)."""
    if not args.log_prob:
        return None
    try:
        return divergence_for(args.div, has_head=model.has_div_head, adaptive=args.reference)
    except ValueError as e:
        raise ValueError(f"--div {args.div}: {e} (checkpoint {args.checkpoint})") from None


def log_prob_path(out: Path) -> Path:
    """Where ``f2d2 sample --log-prob`` writes the samples' log-densities: <stem>.log_prob<suffix> beside --out."""
    return out.with_name(f"{out.stem}.log_prob{out.suffix}")


def sample_cell(model: torch.nn.Module, ckpt_cfg: dict, args: argparse.Namespace) -> dict:
    """One sample cell of a loaded model (``f2d2 sample``'s arguments): writes --out (and --metrics, and with
    --log-prob ``log_prob_path(--out)``); returns the summary, whose ``seconds`` time the guidance and sampling
    alone."""
    div = _sample_div(args, model)
    guidance = Guidance(args.guidance_lr, args.guidance_steps) if args.guidance_steps else None
    if args.reference:
        import torchdiffeq  # noqa: F401  (the solver's import, before the clock starts)
    gen = torch.Generator(args.device).manual_seed(args.seed)
    with explain_out_of_memory(
        f"on {args.device} drawing --batch-size {args.batch_size} samples at once",
        f"lower --batch-size (e.g. {max(1, args.batch_size // 2)})",
    ):
        x0 = torch.randn((args.n, *model.data_shape), generator=gen, device=args.device)
        start = time.perf_counter()
        x1, log_q = sample_in_batches(
            model,
            x0,
            None if args.reference else args.steps,
            div=div,
            log_prob_from=args.log_prob_from,
            guidance=guidance,
            batch_size=args.batch_size,
            generator=gen,
            atol=args.atol,
            rtol=args.rtol,
        )
    seconds = time.perf_counter() - start
    images = len(model.data_shape) == 3
    write_array(args.out, to_pixels(x1.cpu().numpy()) if images else x1.cpu().numpy())  # images: uint8 pixels
    if log_q is not None:  # in model space, before the images' 8-bit rounding
        write_array(log_prob_path(args.out), log_q.double().cpu().numpy(), ["log_prob_nats"])
    summary = {
        "checkpoint": str(args.checkpoint),
        "n": args.n,
        "steps": args.steps,
        "solver": "dopri5" if args.reference else f"{args.steps}-step",
        "seed": args.seed,
        "train_seed": ckpt_cfg["seed"],
        "guidance_steps": args.guidance_steps,
        "guidance_lr": args.guidance_lr,
        "seconds": round(seconds, 4),
    }
    if log_q is not None:
        summary.update(
            div=div,
            log_prob_from=args.log_prob_from,
            log_prob_out=str(log_prob_path(args.out)),
            mean_log_prob_nats=float(log_q.double().mean()),
        )
    if args.metrics is not None:
        if images and args.fid_stats is not None:
            summary["fid"] = fid_to_reference(
                np.load(args.out),
                args.fid_stats,
                args.fid_extractor,
                weights_dir=args.fid_weights_dir,
                device=args.device,
            )
            summary["fid_extractor"] = args.fid_extractor
            summary["fid_network"] = extractor_info(args.fid_extractor, args.fid_weights_dir)
        else:
            summary.update(_sample_quality(ckpt_cfg["data"], x1.cpu(), args.seed))
        atomic_write_text(args.metrics, json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return summary


# what an ``f2d2 eval`` cell of each command checks before any work, and computes
CELL_CHECKS = {"nll": check_nll_args, "sample": check_sample_args, "importance": check_importance_args}
CELLS = {"nll": nll_cell, "sample": sample_cell, "importance": importance_cell}


def _sample_quality(data_cfg: dict, samples: torch.Tensor, seed: int) -> dict:
    """Sliced W2 to as many fresh data points or training images (seed stream 1, apart from the noise; images
    flattened, in model space) and, if analytic, the support mass; ``samples`` (N, *data shape) are the sampler's
    outputs at t = 1 (data)."""
    data = make_dataset(data_cfg)
    fresh = data.sample(len(samples), torch.Generator().manual_seed(seed + SEED_STRIDE))
    out = {"sliced_w2": sliced_wasserstein(samples.flatten(1), fresh.flatten(1), seed=seed)}
    if data.has_density:
        out["support_mass"] = support_mass(data.log_prob(samples))
    return out


def cmd_import_meanflow(args: argparse.Namespace) -> None:
    """``f2d2 import-meanflow``: a MeanFlow CIFAR-10 checkpoint as an f2d2 checkpoint (time flipped to t = 1 data)."""
    model = meanflow.load_meanflow(args.checkpoint, weights=args.weights)
    state = model.state_dict()
    config = {
        "seed": 0,
        "data": {"name": "cifar10", "root": str(args.data_root)},
        "model": {"arch": "unet", **meanflow.MEANFLOW_CIFAR10, "dropout": 0.0, "flow_map": True},
        "objective": {"name": "meanflow"},
        "train": {},
        "imported_from": str(args.checkpoint),
    }
    ema = {**{f"module.{k}": v for k, v in state.items()}, "n_averaged": torch.tensor(1)}
    save_checkpoint(args.out, {"config": config, "step": 0, "model": state, "ema": ema})
    print(f"wrote {args.out}: MeanFlow '{args.weights}' weights as a time-flipped U-Net flow map")


def named_checkpoints(named: list[tuple[str, Path]]) -> dict[str, Path]:
    """{name: checkpoint} of (name, path) pairs given as NAME=PATH; refuses a name given twice or a missing path."""
    names = [name for name, _ in named]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"run names given twice: {twice}; each NAME=PATH needs its own name")
    for _, path in named:
        if not path.exists():
            raise ValueError(f"{path} not found; expected an f2d2 checkpoint .pt or an exported model's folder")
    return dict(named)


def cmd_frontier(args: argparse.Namespace) -> None:
    """``f2d2 frontier``: the speed-accuracy frontier of --run (F2D2) against --teacher on --points, one thread."""
    from f2d2 import api
    from f2d2.eval import frontier

    runs = [name for name, _ in args.run]
    if "teacher" in runs:
        raise ValueError("--run teacher=...: the name 'teacher' is --teacher's")
    checkpoints = named_checkpoints([("teacher", args.teacher), *args.run])
    torch.set_num_threads(1)
    models = {name: api.load(path, args.device) for name, path in checkpoints.items()}
    x = frontier_points(args.points, models["teacher"].data_shape, args.n, args.seed).to(args.device)
    record = measure_frontier(models, "teacher", runs, x, args, lambda line: print(f"[frontier] {line}", flush=True))
    saved = {name: str(path) for name, path in checkpoints.items()}
    frontier.write({"checkpoints": saved, "device": args.device, "threads": 1, **record}, args.out, title=args.title)
    for line in record["verdicts"]["lines"]:
        print(line)
    print(f"wrote {args.out}/frontier.json, frontier.csv, frontier.png")


def measure_frontier(models: dict, teacher: str, runs: list[str], x: torch.Tensor, args: argparse.Namespace, progress):
    """``f2d2.eval.frontier.run`` with the solves, reference, seed and target of ``args`` (``add_frontier_grid``'s
    options, shared by `f2d2 frontier` and bench/frontier.py)."""
    from f2d2.eval import frontier

    grid = {"euler": args.euler, "midpoint": args.midpoint, "rk4": args.rk4, "tols": args.tols, "divs": args.divs}
    grid["impls"] = ("f2d2",) if args.no_peer else frontier.IMPLEMENTATIONS
    return frontier.run(
        models,
        teacher,
        runs,
        x,
        steps=args.steps,
        grid=grid,
        ref_tol=args.ref_tol,
        ref_probes=args.ref_probes,
        speedup=args.speedup,
        seed=args.seed,
        batch_size=args.batch_size,
        paired_rounds=args.paired_rounds,
        progress=progress,
    )


def image_dataset(config: Path, needs: str) -> ImageDataset:
    """The image dataset of experiment config ``config``; ValueError "<config>: <needs> an image dataset" for points."""
    data = make_dataset(resolve_run(load_yaml(config))["data"])
    if not isinstance(data, ImageDataset):
        raise ValueError(f"{config}: {needs} an image dataset, not {type(data).__name__}")
    return data


def cmd_quality(args: argparse.Namespace) -> None:
    """``f2d2 quality``: FID of the teacher's, the baselines' and the F2D2 runs' samplers (guided and not) against
    held-out images of --config's data, with bootstrap intervals and the guidance sweep (``f2d2.eval.quality``)."""
    from f2d2.eval import quality

    teacher, _ = args.teacher
    checkpoints = named_checkpoints([args.teacher, *args.baseline, *args.run])
    runs = [name for name, _ in args.run]
    if args.sweep_run is not None and args.sweep_run not in runs:
        raise ValueError(f"--sweep-run {args.sweep_run!r} is not one of the F2D2 --run names {runs}")
    build_extractor(args.extractor, args.weights_dir)  # a missing network fails here, before any sampling
    data = image_dataset(args.config, "sample quality by FID needs")
    held_out = quality.held_out_split(data.test_pixels(), args.n_reference, args.n, args.seed)
    samplers = quality.plan(
        teacher,
        [name for name, _ in args.baseline],
        runs,
        n=args.n,
        steps=args.steps,
        euler=args.euler,
        lr_one_step=args.lr_one_step,
        lr_multi_step=args.lr_multi_step,
        adam=args.guidance_steps,
        sweep_run=args.sweep_run,
        sweep_steps=args.sweep_steps,
        sweep_lrs=tuple(args.sweep_lrs),
        sweep_adam=tuple(args.sweep_adam),
        sweep_n=args.sweep_n,
    )
    study = quality.Study(
        args.out,
        extractor=args.extractor,
        weights_dir=args.weights_dir,
        device=args.device,
        reps=args.reps,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    start = time.perf_counter()
    models = {name: api_load(path, args.device) for name, path in checkpoints.items()}
    rows = quality.measure(
        samplers,
        models,
        checkpoints,
        teacher,
        held_out,
        study,
        seed=args.seed,
        batch_size=args.batch_size,
        bpd_tol=None if args.no_teacher_bpd else args.bpd_tol,
        log=lambda line: print(line, flush=True),
    )
    record = {
        "command": "f2d2 quality",
        "config": str(args.config),
        "checkpoints": {name: str(path) for name, path in checkpoints.items()},
        "extractor": args.extractor,
        "network": extractor_info(args.extractor, args.weights_dir),
        "n": args.n,
        "n_reference": args.n_reference,
        "seed": args.seed,
        "reps": args.reps,
        "bpd_tol": None if args.no_teacher_bpd else args.bpd_tol,
        "sweep_run": args.sweep_run,
        "sweep_steps": args.sweep_steps,
        "sweep_n": args.sweep_n or args.n,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
        "verdicts": quality.verdicts(rows, teacher=teacher, euler=args.euler, targets=runs, sweep_run=args.sweep_run),
    }
    quality.write(record, args.out)
    for v in record["verdicts"]:
        print(f"{'met' if v['met'] else 'NOT met'}: {v['target']}: {v['value']}")
    print(f"wrote {args.out}/quality.json, quality.csv, quality.png ({record['seconds']} s)")


def frontier_points(path: Path, shape: tuple[int, ...], n: int | None, seed: int) -> torch.Tensor:
    """The first n test points of ``path``, (n, *shape): points as they are, uint8 images dequantized (``seed``)
    into model space, where an NLL error in nats equals the 8-bit pixels' NLL error."""
    if len(shape) == 3:
        from f2d2.eval.bpd import dequantize

        return dequantize(load_images(path, shape)[:n], torch.Generator().manual_seed(seed))
    return load_points(path, dim=shape[0])[:n].float()


def cmd_export(args: argparse.Namespace) -> None:
    """``f2d2 export``: --checkpoint's EMA (or --raw) weights as --out/model.safetensors plus --out/config.json."""
    out = export_model(args.checkpoint, args.out, ema=not args.raw)
    weights = "raw" if args.raw else "EMA"
    print(f"wrote {out}: model.safetensors and config.json ({weights} weights of {args.checkpoint})")


def _test_set(data, name: str, n: int, seed: int) -> tuple[torch.Tensor, int | None, str]:
    """(test points, how many the test set holds (None: an analytic set, any number), their source in words)."""
    if isinstance(data, ImageDataset):  # uint8 (N, C, H, W): all, or a seeded subset of n
        return data.test_subset(n, seed), len(data.test_pixels()), f"test split of {name}"
    if data.has_test_split:  # a user's point file: held-out rows only
        return data.test_points(n, seed), len(data.test), data.test_source
    return data.sample(n, torch.Generator().manual_seed(seed)), None, f"fresh draws from the {name} density"


def cmd_objectives(args: argparse.Namespace) -> None:
    """``f2d2 objectives``: every objective's options as Markdown, printed or written atomically to --out."""
    text = options_reference()
    if args.out is None:
        print(text, end="")
    else:
        atomic_write_text(args.out, text)


def cmd_data(args: argparse.Namespace) -> None:
    """``f2d2 data``: the config's test points, float32 (n, dim), or test images (n, C, H, W) uint8, to --out;
    with --summary where they come from (JSON). Never training data: an analytic 2D set gives --n fresh
    draws, a point file its held-out rows, an image set its test split (all, or a seeded subset of --n)."""
    if args.out is None and args.summary is None:
        raise ValueError("f2d2 data needs --out (the points), --summary (where they come from) or both")
    if args.out is not None:
        check_out_suffix(args.out)
    data_cfg = resolve_run(load_yaml(args.config))["data"]
    name, data = data_cfg["name"], make_dataset(data_cfg)
    images = isinstance(data, ImageDataset)
    if images and args.out is not None and args.out.suffix != ".npy":
        raise ValueError(f"image data are written as .npy; got --out {args.out}")
    points, held, source = _test_set(data, name, args.n, args.seed)
    if held is None:
        split = f"{source}: {len(points)} (seed {args.seed})"
    elif len(points) == held:
        split = f"{source}: all {held}"
    else:
        split = f"{source}: {len(points)} of {held} (seed {args.seed})"
    if args.out is not None:
        write_array(args.out, points.numpy())
    if args.summary is not None:
        record = {
            "data": name,
            "source": source,
            "n": len(points),
            "n_requested": args.n,
            "n_test": held,
            "seed": args.seed,
            "test_split": split,
        }
        atomic_write_text(args.summary, json.dumps(record, indent=1) + "\n")
    what = f"{len(points)} {'test images' if images else 'points'} ({split})"
    if len(points) < args.n:
        what += f"; --n {args.n} asked for more than the {held} there are"
    print(f"wrote {what} to {args.out}" if args.out is not None else f"{what}: described in {args.summary}")


def cmd_fid_reference(args: argparse.Namespace) -> None:
    """``f2d2 fid-reference``: FID reference statistics (mu, sigma) of the config's training images."""
    data = image_dataset(args.config, "FID reference statistics need")
    build_extractor(args.extractor, args.weights_dir)  # fail on missing weights before loading the images
    pixels = data.train_pixels()
    if args.n is not None and args.n < len(pixels):
        pixels = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))[: args.n]]
    name = resolve_run(load_yaml(args.config))["data"]["name"]
    source = reference_stats(
        pixels.numpy(), args.out, args.extractor, name=name, weights_dir=args.weights_dir, device=args.device
    )
    print(f"wrote FID reference statistics of {name} ({args.extractor}) to {args.out}: {source}")
