"""Image speed benchmark: training images/s per stage kind and precision, sampling ms/image, K = 1 BPD time.

    python bench/images.py --size cifar --device cuda --out results/bench/images.json    # the paper's U-Net
    python bench/images.py --size cpu --out /tmp/images.json                             # CI size, ~1 minute
    python bench/images.py --calibrate --device cuda --out results/bench/calibrate       # the short GPU run

``--size cifar``: the U-Net of ``--preset`` (config/cifar10.yaml) on 32x32 patches; ``--size cpu``: a tiny
U-Net on 8x8 patches. Untrained networks throughout (speed does not depend on the weights; the teacher of
the distillation kinds is a second untrained network of the same size). Per stage kind (the preset's
objective options) and mode, the training step the loop takes (data draw on the device, objective forward
under ``train.precision``, backward, RAdam, EMA), warm-up steps excluded, the clock read after
``torch.cuda.synchronize``:

- ``float32``: the defaults; ``bfloat16``: ``train.precision: bfloat16``; ``compile``: ``train.compile: true``
  (float32), only for the kinds in ``--compile-kinds`` (the others print "skipped"), its compile time reported
  apart. Every mode keeps the images on the device (``train.data_on_device``, bit-identical).
- sampling: ms per image of K = 1, 2, 4, 8 flow-map steps (float32, and bfloat16 autocast for comparison:
  evaluation has no precision setting);
- BPD: the K = 1 F2D2 likelihood (divergence head, forward-only) of ``--bpd-n`` test patches (repeated to that
  many), dequantization included, against the reference (dopri5, Hutchinson, atol = rtol = 1e-5) of the same
  network on ``--ref-n`` of them, extrapolated to ``--bpd-n``. An untrained network's ODE is smoother than a
  trained teacher's, so this reference time is a lower bound; ``--calibrate`` times the trained teacher's.

``--trained CONFIG`` times a pipeline's trained networks after its run (e.g. config/patches.yaml): the K = 1 F2D2
BPD of each F2D2 stage on the pipeline's test patches (``eval/test_points.npy``, dequantized as its NLL cells)
against the teacher's reference solve (the config's ``eval.reference`` tolerances), side by side, one after the
other, with the ratio of their seconds.

``--calibrate`` trains config/patches-gpu.yaml's stages (teacher -> Shortcut-Distill -> Shortcut-Distill-F2D2,
the last with the early stop at the teacher's reference BPD) and prints the K = 1 BPD of every test patch
against the reference; ``--tiny`` shrinks it to a CPU-sized check of the same path. Writes ``--out``
(a JSON file, or with --calibrate a folder holding the runs and calibrate.json).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from f2d2.config import experiment
from f2d2.config.resolve import apply_overrides, load_yaml, resolve_run
from f2d2.core.likelihood import log_likelihood, reference_log_likelihood
from f2d2.core.sampling import sample
from f2d2.data import make_dataset
from f2d2.eval.bpd import bits_per_dim
from f2d2.eval.nll import points_nll
from f2d2.io.checkpoint import load_model
from f2d2.nets import build_model
from f2d2.objectives import build_objective, describe
from f2d2.training import speed
from f2d2.training.loop import train

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("flow_matching", "shortcut_distill", "meanflow", "shortcut_distill_f2d2", "meanflow_f2d2", "shortcut_f2d2")
MODES = ("float32", "bfloat16", "compile")
CPU_MODEL = dict(channels=16, channel_mult=[1, 2], attn_resolutions=[4], num_res_blocks=1)
SIZES = {  # image size, batch, warm-up / timed steps, sampling batch, BPD images, reference images
    "cpu": dict(image=8, batch=16, warmup=1, iters=3, sample_batch=64, bpd_n=256, ref_n=4),
    "cifar": dict(image=32, batch=128, warmup=3, iters=10, sample_batch=1000, bpd_n=10000, ref_n=100),
}
CALIBRATE_TINY = [  # --calibrate --tiny: the same three stages at CPU size
    "data.size=8",
    "data.stride=8",
    "data.n_test=48",
    "model.channels=16",
    "model.channel_mult=[1, 2]",
    "model.attn_resolutions=[4]",
    "model.num_res_blocks=1",
    "train.batch_size=32",
    "train.warmup=5",
    "train.log_every=10",
    "train.ckpt_every=100",
    "train.data_on_device=false",
    "teacher:train.steps=40",
    "shortcut_distill:train.steps=20",
    "shortcut_distill_f2d2:train.steps=30",
    "shortcut_distill_f2d2:model.div_scale=100.0",
    "shortcut_distill_f2d2:model.div_hidden=[32, 16]",
    "shortcut_distill_f2d2:train.early_stop.every=15",
    "shortcut_distill_f2d2:train.early_stop.start=0",
    "shortcut_distill_f2d2:train.early_stop.n_val=32",
]
CALIBRATE_STAGES = ("teacher", "shortcut_distill", "shortcut_distill_f2d2")


class Clock:
    """Wall seconds of a block, synchronising a CUDA device before reading the time."""

    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def stage_objectives(preset: dict) -> dict[str, dict]:
    """The objective and model options of each stage kind, from the preset's stages (by objective name)."""
    found = {}
    for stage in preset["stages"].values():
        obj = dict(stage.get("objective") or {})
        found.setdefault(obj.get("name"), {"objective": obj, "model": dict(stage.get("model") or {})})
    return {kind: found.get(kind, {"objective": {"name": kind}, "model": {}}) for kind in KINDS}


def model_config(preset: dict, size: str, image: int, extra: dict) -> dict:
    model = {k: v for k, v in preset["model"].items()}
    if size == "cpu":
        model.update(CPU_MODEL, dropout=0.0)
    return {**model, **extra, "in_channels": 3, "image_size": image}


def time_training(kind: str, spec: dict, mode: str, data, net_cfg: dict, teacher, args, clock: Clock) -> dict:
    """Images/s of the training step of one stage kind in one mode, and the warm-up's seconds."""
    torch.manual_seed(0)
    device = clock.device
    described = describe(spec["objective"])
    model = build_model({**net_cfg, **spec["model"], "flow_map": described.flow_map}).to(device)
    uses_teacher = described.needs_teacher or "teacher" in spec["objective"]
    # a copy of the teacher per kind: its own compile and hooks
    objective = build_objective(spec["objective"], teacher=copy.deepcopy(teacher) if uses_teacher else None)
    tr = {
        "precision": "bfloat16" if mode == "bfloat16" else "float32",
        "compile": mode == "compile",
        "data_on_device": True,
    }
    notes = speed.setup(tr, data, model, objective, device)
    opt = torch.optim.RAdam(model.parameters(), lr=1e-4)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
    gen = torch.Generator(device).manual_seed(0)
    batch = args.batch

    def step():
        x1 = data.sample(batch, gen)
        with speed.autocast(tr["precision"], device):
            terms = objective(model, x1, gen)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        ema.update_parameters(model)

    start = clock.now()
    for _ in range(args.warmup):
        step()
    warm = clock.now()
    for _ in range(args.iters):
        step()
    end = clock.now()
    row = {
        "kind": kind,
        "mode": mode,
        "images_per_s": batch * args.iters / (end - warm),
        "warmup_s": warm - start,
        "batch": batch,
    }
    if notes:
        row["note"] = "; ".join(notes)
    return row


def time_sampling(model, args, clock: Clock) -> list[dict]:
    """ms per image of K-step sampling, float32 and bfloat16 autocast."""
    device, rows = clock.device, []
    x0 = torch.randn(args.sample_batch, *model.data_shape, device=device)
    for precision in ("float32", "bfloat16"):
        for k in (1, 2, 4, 8):
            with speed.autocast(precision, device):
                sample(model, x0, k)  # warm-up
                start = clock.now()
                for _ in range(args.sample_reps):
                    sample(model, x0, k)
                seconds = (clock.now() - start) / args.sample_reps
            rows.append({"nfe": k, "precision": precision, "ms_per_image": 1000 * seconds / args.sample_batch})
    return rows


def bpd_seconds(model, pixels: torch.Tensor, likelihood, batch: int, clock: Clock) -> tuple[float, float, int]:
    """(seconds, mean BPD, model evaluations) of scoring uint8 ``pixels`` (N, C, H, W) on the CPU."""
    start = clock.now()
    nll, nfe = points_nll(
        pixels,
        likelihood,
        model.data_shape,
        batch_size=batch,
        device=clock.device,
        dequant=torch.Generator().manual_seed(0),
    )
    seconds = clock.now() - start
    return seconds, float(bits_per_dim(nll, math.prod(model.data_shape)).mean()), nfe


def time_bpd(model, test: torch.Tensor, args, clock: Clock) -> dict:
    """K = 1 BPD of ``--bpd-n`` images against the reference on ``--ref-n`` of them (extrapolated)."""
    pixels = test.repeat(math.ceil(args.bpd_n / len(test)), 1, 1, 1)[: args.bpd_n]
    few = lambda x: log_likelihood(model, x, 1, div="head", backward="forward-only")  # noqa: E731
    gen = torch.Generator(clock.device).manual_seed(0)
    ref = lambda x: reference_log_likelihood(model, x, div="hutchinson", generator=gen)  # noqa: E731
    bpd_seconds(model, pixels[: args.eval_batch], few, args.eval_batch, clock)  # warm-up
    k1_s, k1_bpd, _ = bpd_seconds(model, pixels, few, args.eval_batch, clock)
    ref_s, ref_bpd, ref_nfe = bpd_seconds(model, pixels[: args.ref_n], ref, args.ref_n, clock)
    ref_full = ref_s * args.bpd_n / args.ref_n
    return {
        "n": args.bpd_n,
        "k1_s": k1_s,
        "k1_bpd": k1_bpd,
        "ref_n": args.ref_n,
        "ref_s_measured": ref_s,
        "ref_nfe": ref_nfe,
        "ref_s_extrapolated": ref_full,
        "ref_bpd": ref_bpd,
        "speedup": ref_full / k1_s,
    }


def benchmark(args) -> dict:
    device = torch.device(args.device)
    clock = Clock(device)
    preset = load_yaml(args.preset)
    size = SIZES[args.size]
    for key, value in size.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.eval_batch = args.eval_batch or args.sample_batch
    # every compiled module shares Module._call_impl's code object: room for all of them in dynamo's cache
    for key in ("cache_size_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, 256)
    data = make_dataset({"name": "patches", "size": size["image"]})
    data.keep_on_device(device)
    net_cfg = model_config(preset, args.size, size["image"], {})
    teacher = build_model({**net_cfg, "flow_map": False}).to(device).requires_grad_(False)
    specs = stage_objectives(preset)
    compile_kinds = KINDS if args.compile_kinds == "all" else [k for k in args.compile_kinds.split(",") if k]
    rows = []
    for kind in KINDS:
        for mode in MODES:
            if mode == "compile" and kind not in compile_kinds:
                rows.append({"kind": kind, "mode": mode, "skipped": "not in --compile-kinds"})
                continue
            rows.append(time_training(kind, specs[kind], mode, data, net_cfg, teacher, args, clock))
            print(f"  {kind:22s} {mode:9s} {rows[-1]['images_per_s']:10.1f} images/s", flush=True)
    f2d2_cfg = {**net_cfg, **specs["shortcut_distill_f2d2"]["model"], "div_head": True, "flow_map": True}
    model = build_model(f2d2_cfg).to(device).eval()
    sampling = time_sampling(model, args, clock)
    bpd = time_bpd(model, data.test_pixels(), args, clock)
    params = sum(p.numel() for p in model.parameters())
    return {
        "size": args.size,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "model": f2d2_cfg,
        "parameters": params,
        "train": rows,
        "sampling": sampling,
        "bpd": bpd,
    }


def print_benchmark(res: dict) -> None:
    print(
        f"\n== bench/images.py --size {res['size']} on {res['device']} ({res['gpu']}), torch {res['torch']}, "
        f"U-Net {res['parameters'] / 1e6:.2f}M parameters, images {res['model']['image_size']}x"
        f"{res['model']['image_size']}"
    )
    by = {(r["kind"], r["mode"]): r for r in res["train"]}
    print(
        f"{'training images/s':24s}" + "".join(f"{m:>12s}" for m in MODES) + f"{'bf16/fp32':>11s}"
        f"{'comp/fp32':>11s}{'compile s':>11s}"
    )
    for kind in KINDS:
        cells, fp32 = [], by[(kind, "float32")]["images_per_s"]
        for mode in MODES:
            r = by[(kind, mode)]
            cells.append(f"{r['images_per_s']:12.1f}" if "images_per_s" in r else f"{'skipped':>12s}")
        comp = by[(kind, "compile")]
        ratio = f"{comp['images_per_s'] / fp32:11.2f}" if "images_per_s" in comp else f"{'-':>11s}"
        warm = f"{comp['warmup_s']:11.1f}" if "warmup_s" in comp else f"{'-':>11s}"
        print(f"{kind:24s}" + "".join(cells) + f"{by[(kind, 'bfloat16')]['images_per_s'] / fp32:11.2f}{ratio}{warm}")
    notes = {r["note"] for r in res["train"] if "note" in r}
    for note in sorted(notes):
        print(f"  note: {note}")
    print(f"{'sampling ms/image':24s}" + "".join(f"{f'{k} NFE':>12s}" for k in (1, 2, 4, 8)))
    for precision in ("float32", "bfloat16"):
        ms = [r["ms_per_image"] for r in res["sampling"] if r["precision"] == precision]
        print(f"  {precision:22s}" + "".join(f"{m:12.4f}" for m in ms))
    b = res["bpd"]
    print(
        f"K = 1 BPD of {b['n']} images: {b['k1_s']:.3f} s (BPD {b['k1_bpd']:.3f}); reference dopri5: "
        f"{b['ref_s_measured']:.2f} s on {b['ref_n']} images ({b['ref_nfe']} NFE), extrapolated to {b['n']}: "
        f"{b['ref_s_extrapolated']:.1f} s (untrained network: a lower bound); K = 1 is {b['speedup']:.0f}x faster"
    )


def stage_overrides(items: list[str], stage: str) -> list[str]:
    """The ``key=value`` overrides of one stage: those without a stage and those written ``stage:key=value``."""
    out = []
    for item in items:
        key = item.split("=", 1)[0]
        if ":" not in key:
            out.append(item)
        elif key.split(":", 1)[0] == stage:
            out.append(item.split(":", 1)[1])
    return out


def calibrate(args) -> dict:
    """Train teacher -> Shortcut-Distill -> Shortcut-Distill-F2D2 and compare K = 1 BPD with the reference."""
    out = Path(args.out)
    cfg = load_yaml(args.calibrate_config)
    overrides = [f"train.device={args.device}"] + (CALIBRATE_TINY if args.tiny else []) + list(args.set)
    clock, timings = Clock(torch.device(args.device)), {}
    for stage in CALIBRATE_STAGES:
        run = resolve_run(apply_overrides(resolve_run(cfg, stage, stage_root=out), stage_overrides(overrides, stage)))
        start = clock.now()
        train(run, out / stage, progress=False)
        timings[stage] = clock.now() - start
        print(f"  trained {stage} ({run['train']['steps']} steps max) in {timings[stage]:.1f} s", flush=True)
    data = make_dataset(run["data"])  # the last stage's
    test = data.test_pixels()
    teacher = load_model(out / "teacher" / "checkpoint.pt", device=args.device)
    model = load_model(out / CALIBRATE_STAGES[-1] / "checkpoint.pt", device=args.device)
    batch, backward = len(test), cfg["eval"]["backward"]
    gen = torch.Generator(args.device).manual_seed(0)
    ref_s, ref_bpd, ref_nfe = bpd_seconds(
        teacher, test, lambda x: reference_log_likelihood(teacher, x, div="hutchinson", generator=gen), batch, clock
    )
    k1_s, k1_bpd, _ = bpd_seconds(
        model, test, lambda x: log_likelihood(model, x, 1, div="head", backward=backward), batch, clock
    )
    stopped = torch.load(out / CALIBRATE_STAGES[-1] / "checkpoint.pt", map_location="cpu", weights_only=False).get(
        "early_stopped"
    )
    res = {
        "stages": list(CALIBRATE_STAGES),
        "train_s": timings,
        "n_test": len(test),
        "k1_bpd": k1_bpd,
        "k1_s": k1_s,
        "ref_bpd": ref_bpd,
        "ref_s": ref_s,
        "ref_nfe": ref_nfe,
        "gap": abs(k1_bpd - ref_bpd),
        "within_0.1": abs(k1_bpd - ref_bpd) <= 0.1,
        "early_stopped": stopped,
        "tiny": args.tiny,
    }
    print(
        f"\n== calibration on {len(test)} test patches: K = 1 BPD {k1_bpd:.4f} ({k1_s:.3f} s) vs reference "
        f"{ref_bpd:.4f} ({ref_s:.1f} s, {ref_nfe} NFE): gap {res['gap']:.4f} bits/dim, "
        f"{'within' if res['within_0.1'] else 'NOT within'} 0.1; training {sum(timings.values()):.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}); early stop: {stopped}"
    )
    return res


def time_trained(args) -> dict:
    """K = 1 BPD of every F2D2 stage of the pipeline config ``args.trained`` against its teacher's reference solve,
    on the pipeline's test patches, each timed on ``args.device``."""
    cfg = load_yaml(args.trained)
    out = Path(cfg["outdir"]) if Path(cfg["outdir"]).is_absolute() else ROOT / cfg["outdir"]
    points = out / "eval" / "test_points.npy"
    teacher = experiment.reference_stage(cfg)
    runs = experiment.f2d2_stages(cfg)  # the stages, not the ablation runs
    ckpt = {run: out / "train" / run / "checkpoint.pt" for run in [teacher, *runs]}
    if missing := [str(p) for p in [points, *ckpt.values()] if not p.exists()]:
        raise SystemExit(f"--trained {args.trained}: {missing} not found; run the pipeline on this config first")
    test = torch.from_numpy(np.load(points))
    ev, clock = cfg["eval"], Clock(torch.device(args.device))
    batch = ev.get("batch_size") or len(test)
    model = load_model(ckpt[teacher], device=args.device)
    gen = torch.Generator(args.device).manual_seed(0)  # the reference cell's probes (f2d2 nll --seed 0)
    tol = ev["reference"]
    ref = lambda x: reference_log_likelihood(  # noqa: E731
        model, x, atol=tol["atol"], rtol=tol["rtol"], div=tol["div"], generator=gen
    )
    ref_s, ref_bpd, ref_nfe = bpd_seconds(model, test, ref, batch, clock)
    rows = []
    for run in runs:
        f2d2 = load_model(ckpt[run], device=args.device)
        two_way = describe(experiment.run_config(cfg, run)["objective"]).two_way
        few = functools.partial(
            log_likelihood, f2d2, steps=1, div="head", backward="two-way" if two_way else "forward-only"
        )
        bpd_seconds(f2d2, test[:batch], few, batch, clock)  # warm-up
        k1_s, k1_bpd, _ = bpd_seconds(f2d2, test, few, batch, clock)
        rows.append({"run": run, "k1_bpd": k1_bpd, "k1_s": k1_s, "speedup": ref_s / k1_s})
    return {
        "config": str(args.trained),
        "device": args.device,
        "n": len(test),
        "reference": {"run": teacher, "bpd": ref_bpd, "s": ref_s, "nfe": ref_nfe},
        "f2d2": rows,
    }


def print_trained(res: dict) -> None:
    ref = res["reference"]
    print(
        f"{res['n']} test patches on {res['device']}: reference ({ref['run']}, dopri5) {ref['bpd']:.4f} bits/dim in "
        f"{ref['s']:.2f} s ({ref['nfe']} NFE)"
    )
    for row in res["f2d2"]:
        print(
            f"  {row['run']:34s} K = 1 {row['k1_bpd']:.4f} bits/dim in {row['k1_s'] * 1000:8.1f} ms: "
            f"{row['speedup']:.0f}x faster"
        )


def write_result(path: str | None, res: dict) -> None:
    """``res`` as JSON at ``path`` (its folder made), if a path is given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(res, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="cpu")
    p.add_argument(
        "--preset",
        default=str(ROOT / "config" / "cifar10.yaml"),
        help="the stages' objective options, and --size cifar's U-Net",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="JSON file (a folder with --calibrate)")
    p.add_argument(
        "--compile-kinds",
        default=None,
        help="comma-separated stage kinds to time with train.compile, or 'all' (default: flow_matching, "
        "on --size cifar, where each kind's compile takes a minute or more; none on --size cpu)",
    )
    for key in ("batch", "warmup", "iters", "sample_batch", "bpd_n", "ref_n"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help="default: per --size")
    p.add_argument("--sample-reps", type=int, default=3)
    p.add_argument("--eval-batch", type=int, default=None, help="images per K = 1 BPD batch (default: --sample-batch)")
    p.add_argument("--calibrate", action="store_true", help="the short training run instead of the timings")
    p.add_argument("--calibrate-config", default=str(ROOT / "config" / "patches-gpu.yaml"))
    p.add_argument("--tiny", action="store_true", help="--calibrate at CPU size")
    p.add_argument("--set", action="append", default=[], help="with --calibrate: a config override, [stage:]key=value")
    p.add_argument("--trained", metavar="CONFIG", help="time a pipeline's trained F2D2 runs (after its run)")
    args = p.parse_args(argv)
    if args.trained:
        res = time_trained(args)
        print_trained(res)
        write_result(args.out, res)
        return 0
    if args.calibrate:
        if args.out is None:
            p.error("--calibrate needs --out (a folder)")
        res = calibrate(args)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "calibrate.json").write_text(json.dumps(res, indent=1, default=str))
        return 0
    if args.compile_kinds is None:
        args.compile_kinds = "flow_matching" if args.size == "cifar" else ""
    res = benchmark(args)
    print_benchmark(res)
    write_result(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
