"""Where self-guidance moves image samples: the quality study's samples regenerated (same noise, same guidance) and
described by simple image statistics, beside the held-out images. Not a test: it prints numbers.

    python bench/guidance.py --config config/patches.yaml --results results/patches --n 1000

For the teacher's dopri5 and 64-step samples, and for each F2D2 stage at each K, unguided and guided with the lr
(and Adam steps) of each --lr: per image the pixel standard deviation (contrast) and the mean absolute difference
of neighbouring pixels (detail), in 0..255 units, averaged over the images, and the share of near-flat images
(pixel std < 8); the same for --n held-out images of the test split. Adam's first step moves every noise
coordinate by exactly lr (its update is lr g / |g|), so lr is the RMS move of the noise. Guidance raises the
one-step predicted log-likelihood of the noise, and with it (quality.json's teacher_bpd) the teacher's likelihood
of the samples; these statistics say what changed in the images: whether they moved toward the data's contrast
and detail or away from them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import f2d2
from f2d2.config import experiment
from f2d2.config.resolve import load_yaml, resolve_run
from f2d2.core.guidance import self_guided_noise
from f2d2.data import make_dataset
from f2d2.eval.fid import to_pixels
from f2d2.eval.quality import held_out_split
from f2d2.io.atomic import atomic_write_text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, required=True, help="the image experiment's config")
    p.add_argument("--results", type=Path, required=True, help="its outdir (train/<stage>/checkpoint.pt)")
    p.add_argument("--n", type=int, default=1000, help="samples per cell and held-out images")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2], help="K")
    p.add_argument("--lr", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2], help="guidance learning rates")
    p.add_argument("--adam", type=int, default=1, help="Adam steps")
    p.add_argument("--seed", type=int, default=777, help="noise seed (the quality study's: eval.sample_seed)")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    return p.parse_args(argv)


def describe(pixels: np.ndarray) -> dict:
    """Mean per-image pixel std, neighbour difference (0..255) and share of near-flat images of uint8 (n, C, H, W)."""
    x = pixels.astype(np.float64)
    std = x.reshape(len(x), -1).std(axis=1)
    detail = (np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3)) + np.abs(np.diff(x, axis=3)).mean(axis=(1, 2, 3))) / 2
    return {"pixel_std": float(std.mean()), "detail": float(detail.mean()), "flat_share": float((std < 8).mean())}


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_yaml(args.config)
    torch.manual_seed(0)
    data = make_dataset(resolve_run(cfg)["data"])
    held, _ = held_out_split(data.test_pixels(), args.n, 0, args.seed)  # the quality study's reference images
    rows = [{"cell": "held-out images", **describe(held)}]
    teacher = f2d2.load(args.results / "train" / experiment.reference_stage(cfg) / "checkpoint.pt")
    x0 = torch.randn((args.n, *teacher.data_shape), generator=torch.Generator().manual_seed(args.seed))
    for k in (None, 64):
        px = to_pixels(f2d2.sample(teacher, x0, k).numpy())
        rows.append({"cell": f"teacher/{'dopri5' if k is None else f'K{k}'}", **describe(px)})
    for run in experiment.f2d2_stages(cfg):
        model = f2d2.load(args.results / "train" / run / "checkpoint.pt")
        x0 = torch.randn((args.n, *model.data_shape), generator=torch.Generator().manual_seed(args.seed))
        for k in args.steps:
            rows.append({"cell": f"{run}/K{k}", **describe(to_pixels(f2d2.sample(model, x0, k).numpy()))})
            for lr in args.lr:
                eps = self_guided_noise(model, x0, lr=lr, steps=args.adam)
                px = to_pixels(f2d2.sample(model, eps, k).numpy())
                rows.append({"cell": f"{run}/K{k}_g{args.adam}x{lr:g}", **describe(px)})
    width = max(len(r["cell"]) for r in rows)
    print(f"{'cell':<{width}}  pixel std  detail  flat share")
    for r in rows:
        print(f"{r['cell']:<{width}}  {r['pixel_std']:9.2f}  {r['detail']:6.2f}  {r['flat_share']:10.3f}")
    if args.out:
        atomic_write_text(args.out, json.dumps({"argv": sys.argv, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
