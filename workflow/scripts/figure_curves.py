"""Training curves: every run's ``metrics.jsonl`` drawn, one panel per run, one line per logged term.

The loss terms (every key of a row but ``step``, ``lr``, ``time`` and the validation keys) go on the
left axis against the step, on a log scale when all their values are positive; the early stop's
``val_bpd`` and ``target_bpd``, where the run logs them, go on a right axis (bits/dim). A JSON beside
the figure lists each run's terms and validation keys as drawn. Snakemake: input (the runs'
``train.json``; ``metrics.jsonl`` is read beside each), params.runs; output.figure, output.terms.
"""

import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402, I001  (selects the Agg backend before pyplot)
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

NOT_TERMS = ("step", "lr", "time")
VALIDATION = ("val_bpd", "target_bpd")
COLUMNS = 4


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """A ``metrics.jsonl`` as a DataFrame, one row per logged step (a key a row lacks is NaN)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} has no logged rows")
    df = pd.DataFrame(rows)
    if "step" not in df.columns:
        raise ValueError(f"{path} has no step column (columns: {list(df.columns)})")
    return df


def drawn_keys(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(loss terms, validation keys) of a run's log, in the log's column order; an early stop over several K also
    logs each K's BPD (``val_bpd_K<k>``), which is validation too but not drawn (val_bpd is the worst of them)."""
    validation = [k for k in VALIDATION if k in df.columns and df[k].notna().any()]
    terms = [k for k in df.columns if k not in NOT_TERMS and k not in VALIDATION and not k.startswith("val_bpd_K")]
    return terms, validation


def _panel(ax, run: str, df: pd.DataFrame) -> dict:
    terms, validation = drawn_keys(df)
    for key in terms:
        rows = df[df[key].notna()]
        style = {"color": "0.6", "linewidth": 2.5} if key == "loss" else {"linewidth": 1}  # the total, under its terms
        ax.plot(rows["step"], rows[key], label=key, **style)
    values = df[terms].to_numpy().ravel()
    if len(values) and all(v > 0 for v in values if not math.isnan(v)):
        ax.set_yscale("log")
    ax.set_title(run, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    handles, labels = ax.get_legend_handles_labels()
    if validation:
        val_ax = ax.twinx()
        for key, style in zip(validation, ("-", ":")):
            rows = df[df[key].notna()]
            val_ax.plot(rows["step"], rows[key], style, color="black", label=key, linewidth=1)
        val_ax.set_ylabel("bits/dim", fontsize=8)
        val_ax.tick_params(labelsize=7)
        h, lab = val_ax.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    ax.legend(handles, labels, fontsize=7, loc="best")
    return {"terms": terms, "validation": validation}


def plot_curves(metrics: dict[str, str | os.PathLike]) -> tuple[plt.Figure, dict[str, dict]]:
    """The figure of ``metrics`` ({run: metrics.jsonl}, panels in that order) and, per run, the keys drawn."""
    if not metrics:
        raise ValueError("no runs to draw")
    n = len(metrics)
    cols = min(COLUMNS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    drawn = {run: _panel(ax, run, read_metrics(path)) for (run, path), ax in zip(metrics.items(), axes.flat)}
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle("Training curves (metrics.jsonl): loss terms; early-stop validation BPD on the right axis")
    fig.tight_layout()
    return fig, drawn


def metrics_paths(train_jsons, runs) -> dict[str, Path]:
    """{run: metrics.jsonl beside its train.json}, in ``runs`` order."""
    by_run = {Path(p).parent.name: Path(p).with_name("metrics.jsonl") for p in train_jsons}
    missing = [r for r in runs if r not in by_run]
    if missing:
        raise ValueError(f"no train.json among the inputs for run(s) {missing}")
    return {r: by_run[r] for r in runs}


def main(metrics: dict[str, str | os.PathLike], figure: str, terms: str) -> dict[str, dict]:
    """Draw ``metrics`` into ``figure`` (PNG) and list the keys drawn in ``terms`` (JSON)."""
    fig, drawn = plot_curves(metrics)
    common.save_figure(fig, figure)
    common.write_text(json.dumps(drawn, indent=1) + "\n", terms)
    return drawn


if "snakemake" in globals():
    _sm = snakemake
    main(
        metrics_paths([str(p) for p in _sm.input], list(_sm.params.runs)), str(_sm.output.figure), str(_sm.output.terms)
    )
