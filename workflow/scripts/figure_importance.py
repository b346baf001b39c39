"""Importance-sampling figure: ESS / N against the seconds of sampling and log q (log scale), one line per run
through its K-step proposals (K labelled), the dopri5 reference a star. Snakemake: input[0] the importance table
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
    for (_, method), rows in df[df["proposal"] != "reference"].groupby(["run", "method"], sort=False):
        line = ax.plot(rows["seconds"], rows["ess_per_sample"], "o-", label=method)[0]
        for _, r in rows.iterrows():
            ax.annotate(r["proposal"], (r["seconds"], r["ess_per_sample"]), fontsize=6, color=line.get_color())
    for _, r in df[df["proposal"] == "reference"].iterrows():
        ax.plot(r["seconds"], r["ess_per_sample"], "k*", markersize=12, label=f"{r['method']} (dopri5 reference)")
    ax.set_xscale("log")
    ax.set_xlabel("seconds (sampling and log q)")
    ax.set_ylabel("ESS / N")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title(f"Self-normalised importance sampling, N = {int(df['n'].iloc[0])}", fontsize=9)
    common.save_figure(fig, out)


if "snakemake" in globals():
    main(str(snakemake.input[0]), str(snakemake.output[0]))
