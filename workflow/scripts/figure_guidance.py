"""Figure 2: sample quality (FID for images, else sliced W2) vs NFE, with and without self-guidance.

NFE = K unguided and K + 1 guided (guidance costs one extra forward and backward pass).
F2D2 methods: solid = unguided, dashed = guided (same colour); plus the teacher's Euler
line. Where the cells hold ``support_mass`` (data with a density: the share of samples where it is
positive), a second panel plots it: guidance can raise it while the distance to the data grows. The
plotted numbers go to a CSV beside the PNG (same stem). Snakemake: input.samples (flat list of
unguided and ``_guided`` cells); params.methods, params.steps, params.config, params.teacher
(optional, default "teacher"), params.labels ({run: label}, the legend and the method column); output[0] the PNG.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import common  # noqa: E402  (selects the Agg backend)

MASS = "support_mass"


def _points(
    run: str, cells: dict, steps: list[int], guided: bool, config: str, keys: list[str], labels: dict[str, str]
) -> list[dict]:
    rows = []
    kind = "guided sample" if guided else "unguided sample"
    for k, read in common.cells_by_k(run, steps, {kind: cells}):
        path, cell = read[kind]
        rows.append(
            {
                "method": common.method_label(run, labels),
                "run": run,
                "guided": guided,
                "K": k,
                "nfe": k + 1 if guided else k,
                **{key: float(common.cell_value(cell, key, path)) for key in keys},
                "config": config,
                "seed": common.cell_value(cell, "train_seed", path),
            }
        )
    return rows


def main(
    sample_cells: dict,
    guided_cells: dict,
    methods: list[str],
    steps: list[int],
    config: str,
    out: str,
    teacher: str | None = "teacher",
    *,
    labels: dict[str, str],
) -> pd.DataFrame:
    """Cells keyed by (run, k); ``methods`` are the F2D2 runs; ``labels`` {run: label} names them. Writes ``out``
    (PNG) and its .csv."""
    steps = sorted(int(k) for k in steps)
    cells = [common.read_json(p) for p in sample_cells.values()]
    key, _ = common.sample_metric(cells)
    keys = [key] + ([MASS] if cells and all(MASS in c for c in cells) else [])
    rows = []
    if teacher:
        rows += _points(teacher, sample_cells, steps, False, config, keys, labels)
    for run in methods:
        rows += _points(run, sample_cells, steps, False, config, keys, labels)
        rows += _points(run, guided_cells, steps, True, config, keys, labels)
    df = pd.DataFrame(rows, columns=["method", "run", "guided", "K", "nfe", *keys, "config", "seed"])

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    axis_labels = {
        key: f"{'FID' if key == 'fid' else 'sliced W2'} (lower is better)",
        MASS: "mass in the support (higher is better)",
    }
    for ax, metric in zip(axes[0], keys, strict=True):
        if teacher:
            t = df[df.run == teacher]
            ax.plot(t.nfe, t[metric], "o-", color="black", label=f"{common.method_label(teacher, labels)} (teacher)")
        for i, run in enumerate(methods):
            for guided, style in ((False, "o-"), (True, "s--")):
                d = df[(df.run == run) & (df.guided == guided)]
                label = common.method_label(run, labels) + (" + guidance" if guided else "")
                ax.plot(d.nfe, d[metric], style, color=f"C{i}", label=label)
        ax.set_xscale("log", base=2)
        if metric != MASS:  # the teacher's few-step Euler samples sit an order of magnitude above the maps'
            ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(axis_labels[metric])
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    common.save_figure(fig, out)
    common.write_csv(df, Path(out).with_suffix(".csv"))
    return df


if "snakemake" in globals():
    _p = snakemake.params
    _teacher = getattr(_p, "teacher", "teacher")
    _methods, _steps = list(_p.methods), [int(k) for k in _p.steps]
    _runs = ([_teacher] if _teacher else []) + _methods
    main(
        common.cells_from_paths(snakemake.input.samples, _runs, _steps),
        common.cells_from_paths(snakemake.input.samples, _methods, _steps, guided=True),
        _methods,
        _steps,
        common.project_path(_p.config),
        str(snakemake.output[0]),
        _teacher,
        labels=dict(_p.labels),
    )
