"""Figure 3: density maps exp(-NLL) on a 2D grid, one panel per (method, K).

``grid.json`` = {"lo", "hi", "size"}: point i is (xs[i % size], ys[i // size]) with
xs = ys = linspace(lo, hi, size). The analytic density (``analytic_nll_nats`` column,
``inf`` off the support) comes first when present. All panels share one colour scale: 0 to
twice the analytic density's maximum when it is plotted (the true density mid-scale, a
baseline's spikes saturate), else to the 99.5th percentile of all plotted values (a few spikes
must not wash out the rest). Snakemake: input.grid, input.density (flat list of ``{run}/K{k}.csv``, panel
order = input order); params.analytic (optional, default True), params.labels ({run: label}, the panel
titles); output[0] the PNG.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402  (selects the Agg backend)


def read_grid(path: str) -> tuple[float, float, int]:
    with open(path) as f:
        g = json.load(f)
    missing = {"lo", "hi", "size"} - set(g)
    if missing:
        raise KeyError(f"{path} lacks {sorted(missing)}")
    return float(g["lo"]), float(g["hi"]), int(g["size"])


def density_map(values: np.ndarray, size: int, source) -> np.ndarray:
    """exp(-nll) of row-major grid points (x fastest) as a (size, size) array indexed [y, x]."""
    if values.shape != (size * size,):
        raise ValueError(f"{source} has {values.size} points; the grid has {size}x{size} = {size * size}")
    return np.exp(-values).reshape(size, size)


def panels_from_paths(paths) -> dict[tuple[str, int], str]:
    """Flat list of ``.../{run}/K{k}.csv`` -> {(run, k): path}, in input order."""
    out = {}
    for p in paths:
        run, k, _ = common.parse_cell_path(p)
        out[(run, k)] = str(p)
    return out


def color_max(maps: list[np.ndarray], has_analytic: bool) -> float:
    """The top of the shared colour scale: 2 x the analytic map's maximum (the first map) when there is one,
    else the 99.5th percentile of every finite value; 1 when that is not positive."""
    if has_analytic and np.isfinite(maps[0]).any():
        vmax = 2 * float(np.nanmax(np.where(np.isfinite(maps[0]), maps[0], np.nan)))
    else:
        pooled = np.concatenate([m[np.isfinite(m)].ravel() for m in maps])
        vmax = float(np.percentile(pooled, 99.5)) if pooled.size else 1.0
    return vmax if vmax > 0 else 1.0


def main(grid: str, density_cells: dict, out: str, analytic: bool = True, *, labels: dict[str, str]) -> list[str]:
    """density_cells: {(run, k): per-grid-point CSV}, panels in dict order; ``labels`` {run: label} titles them.
    Writes ``out`` (PNG); returns titles."""
    lo, hi, size = read_grid(grid)
    if not density_cells:
        raise ValueError("no density cells to plot")
    maps, titles = [], []
    for (run, k), path in density_cells.items():
        df = common.read_points_csv(path)
        if analytic and not maps and "analytic_nll_nats" in df.columns:
            maps.append(density_map(df["analytic_nll_nats"].to_numpy(), size, path))
            titles.append("Analytic density")
        maps.append(density_map(df["nll_nats"].to_numpy(), size, path))
        titles.append(f"{common.method_label(run, labels)}, K={k}")
    vmax = color_max(maps, has_analytic=titles[0] == "Analytic density")

    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps) + 0.6, 2.8), squeeze=False)
    for ax, m, title in zip(axes[0], maps, titles):
        im = ax.imshow(m, origin="lower", extent=[lo, hi, lo, hi], vmin=0.0, vmax=vmax, cmap="viridis")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="density")
    common.save_figure(fig, out)
    return titles


if "snakemake" in globals():
    main(
        str(snakemake.input.grid),
        panels_from_paths([p for p in snakemake.input.density if Path(p).suffix == ".csv"]),
        str(snakemake.output[0]),
        bool(getattr(snakemake.params, "analytic", True)),
        labels=dict(snakemake.params.labels),
    )
