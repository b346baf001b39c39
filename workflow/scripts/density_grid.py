"""Writes the grid of 2D points on which Figure 3's density maps are evaluated.

size x size points over [lo, hi]^2 in row-major order, x varying fastest; grid.json records lo, hi, size.
"""

import json
import os
import tempfile

import numpy as np


def main(lo: float, hi: float, size: int, points_out: str, meta_out: str) -> None:
    xs = np.linspace(lo, hi, size, dtype=np.float32)
    gx, gy = np.meshgrid(xs, xs)  # gy varies along rows: index = row * size + col
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    for path, write in ((points_out, lambda f: np.save(f, grid)),
                        (meta_out, lambda f: f.write(json.dumps({"lo": lo, "hi": hi, "size": size}).encode()))):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)


if "snakemake" in globals():
    p = snakemake.params  # noqa: F821
    main(float(p.lo), float(p.hi), int(p.size), snakemake.output.points, snakemake.output.meta)  # noqa: F821
