"""Importance-sampling table: self-normalised importance sampling of the 2D target with each proposal's samples
and log q (``f2d2 importance`` cells), one row per (run, K and where log q comes from, or the dopri5 reference).

Columns: ``method`` (the run's label), ``run``, ``proposal`` (``K=<k>`` or ``reference``), ``log_prob_from``
(``noise``: along the forward steps; ``sample``: the likelihood of each returned sample), ``n``,
``ess_per_sample`` (ESS / N), ``support_share`` (samples with p~ > 0), ``log_z_abs_err`` (|log Z estimate - log Z|),
``sq_norm_abs_err`` and ``x1x2_abs_err`` (|SNIS estimate - E_p f| of f = |x|^2 and x1 x2; empty when the target's
truth is unknown), ``seconds`` (sampling and log q), ``ess_vs_reference`` and ``seconds_vs_reference`` (ratios to
the reference row's), ``sample_seed``, ``config``, ``seed`` (the run's training seed).
Snakemake: input (the cells' JSONs, in params.cells order), params.cells ([run, cell name] each: "K<k>",
"K<k>_sample" or "reference"),
params.reference (the run of the reference row), params.config, params.labels ({run: label}); output[0] the CSV.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pandas as pd  # noqa: E402

import common  # noqa: E402

COLUMNS = [
    "method",
    "run",
    "proposal",
    "log_prob_from",
    "n",
    "ess_per_sample",
    "support_share",
    "log_z_abs_err",
    "sq_norm_abs_err",
    "x1x2_abs_err",
    "seconds",
    "ess_vs_reference",
    "seconds_vs_reference",
    "sample_seed",
    "config",
    "seed",
]


def row(path: str, run: str, name: str, labels: dict[str, str], config: str) -> dict:
    """One table row from the importance cell ``path`` of (run, "K<k>" | "K<k>_sample" | "reference")."""
    cell = common.read_json(path)
    keys = ("n", "seed", "train_seed", "seconds", "expectations", "ess_per_sample", "support_share", "log_z_abs_err",
            "log_prob_from")  # fmt: skip
    value = {key: common.cell_value(cell, key, path) for key in keys}
    return {
        "method": common.method_label(run, labels),
        "run": run,
        "proposal": name if name == "reference" else f"K={name[1:].split('_')[0]}",
        "log_prob_from": value["log_prob_from"],
        "n": int(value["n"]),
        "ess_per_sample": float(value["ess_per_sample"]),
        "support_share": float(value["support_share"]),
        "log_z_abs_err": value["log_z_abs_err"],
        **{f"{name}_abs_err": value["expectations"][name]["abs_err"] for name in ("sq_norm", "x1x2")},
        "seconds": float(value["seconds"]),
        "sample_seed": int(value["seed"]),
        "config": config,
        "seed": value["train_seed"],
    }


def main(
    paths: list[str], cells: list[tuple[str, str]], reference: str, config: str, out: str, *, labels: dict[str, str]
) -> pd.DataFrame:
    """Build the table from the cells ``paths`` of ``cells`` [(run, cell name)] and write ``out``."""
    if len(paths) != len(cells):
        raise ValueError(f"{len(paths)} cell files for {len(cells)} cells")
    rows = {tuple(key): row(path, *key, labels, config) for path, key in zip(paths, cells)}
    if (reference, "reference") not in rows:
        raise ValueError(f"no reference cell of run {reference!r} among {list(rows)}")
    ref = rows[(reference, "reference")]
    for r in rows.values():
        r["ess_vs_reference"] = r["ess_per_sample"] / ref["ess_per_sample"]
        r["seconds_vs_reference"] = r["seconds"] / ref["seconds"]
    df = pd.DataFrame(list(rows.values()), columns=COLUMNS)
    common.write_csv(df, out)
    return df


if "snakemake" in globals():
    main(
        [str(p) for p in snakemake.input],
        [tuple(c) for c in snakemake.params.cells],
        snakemake.params.reference,
        common.project_path(snakemake.params.config),
        str(snakemake.output[0]),
        labels=dict(snakemake.params.labels),
    )
