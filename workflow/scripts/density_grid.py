"""Writes the grid of 2D points on which Figure 3's density maps are evaluated.

size x size points over [lo, hi]^2 in row-major order, x varying fastest; grid.json records lo, hi, size.
"""

import json

import numpy as np

from f2d2.io.atomic import atomic_path, atomic_write_text


def main(lo: float, hi: float, size: int, points_out: str, meta_out: str) -> None:
    xs = np.linspace(lo, hi, size, dtype=np.float32)
    gx, gy = np.meshgrid(xs, xs)  # gy varies along rows: index = row * size + col
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    with atomic_path(points_out) as tmp:
        np.save(tmp, grid)
    atomic_write_text(meta_out, json.dumps({"lo": lo, "hi": hi, "size": size}))


if "snakemake" in globals():
    p = snakemake.params
    main(float(p.lo), float(p.hi), int(p.size), snakemake.output.points, snakemake.output.meta)
