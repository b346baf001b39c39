"""Importance-sampling figure: ESS / N against the seconds of sampling and log q (log scale), one line per run and
way of computing log q through its K-step proposals (K labelled; log q from the noise solid, from the sample
dashed, in the run's colour), the dopri5 reference a star. Snakemake: input[0] the importance table
(table_importance.py's CSV); output[0] the PNG.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402, I001  (selects the Agg backend before pyplot)
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def main(table: str, out: str) -> None:
    df = pd.read_csv(table)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colours = {}
    for (run, method, how), rows in df[df["proposal"] != "reference"].groupby(
        ["run", "method", "log_prob_from"], sort=False
    ):
        style = "o-" if how == "noise" else "s--"
        colour = colours.setdefault(run, f"C{len(colours)}")
        ax.plot(rows["seconds"], rows["ess_per_sample"], style, color=colour, label=f"{method}, log q from the {how}")
        for _, r in rows.iterrows():
            ax.annotate(r["proposal"], (r["seconds"], r["ess_per_sample"]), fontsize=6, color=colour)
    for _, r in df[df["proposal"] == "reference"].iterrows():
        ax.plot(r["seconds"], r["ess_per_sample"], "k*", markersize=12, label=f"{r['method']} (dopri5 reference)")
    ax.set_xscale("log")
    ax.set_xlabel("seconds (sampling and log q)")
    ax.set_ylabel("ESS / N")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    ax.set_title(f"Self-normalised importance sampling, N = {int(df['n'].iloc[0])}", fontsize=9)
    common.save_figure(fig, out)


if "snakemake" in globals():
    main(str(snakemake.input[0]), str(snakemake.output[0]))
