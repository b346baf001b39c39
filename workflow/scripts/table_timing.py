"""Table 4: wall time of few-step sampling and few-step NLL per method, K = 8, 4, 2, 1.

Columns ``K{k}_sample_seconds`` (sampling n points), ``K{k}_ms_per_sample``
(seconds / n * 1000), ``K{k}_nll_seconds``, then ``reference_nll_seconds`` (the teacher's
dopri5 reference, same on every row). Snakemake: input.nll, input.samples (flat lists),
input.reference; params.methods, params.steps, params.config, params.labels ({run: label}, the method
column); output[0] the CSV.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pandas as pd  # noqa: E402

import common  # noqa: E402


def main(
    nll_cells: dict,
    sample_cells: dict,
    reference: str,
    methods: list[str],
    steps: list[int],
    config: str,
    out: str,
    *,
    labels: dict[str, str],
) -> pd.DataFrame:
    """Build Table 4 from cells keyed by (run, k) and write it to ``out`` (CSV); ``labels`` {run: label} names
    the methods."""
    steps = common.descending(steps)
    ref = common.read_json(reference)
    ref_seconds = float(common.cell_value(ref, "seconds", reference))
    cols = ["method", "run"]
    for k in steps:
        cols += [f"K{k}_sample_seconds", f"K{k}_ms_per_sample", f"K{k}_nll_seconds"]
    cols += ["reference_nll_seconds", "config", "seed"]
    rows = []

    def fill(row: dict, k: int, read: dict) -> None:
        (s_path, s), (n_path, n) = read["sample"], read["NLL"]
        seconds = float(common.cell_value(s, "seconds", s_path))
        row[f"K{k}_sample_seconds"] = seconds
        row[f"K{k}_ms_per_sample"] = seconds / int(common.cell_value(s, "n", s_path)) * 1000.0
        row[f"K{k}_nll_seconds"] = float(common.cell_value(n, "seconds", n_path))

    for run in methods:
        row = common.method_row(run, steps, {"sample": sample_cells, "NLL": nll_cells}, fill, labels)
        rows.append({**row, "reference_nll_seconds": ref_seconds, "config": config})
    df = pd.DataFrame(rows, columns=cols)
    common.write_csv(df, out)
    return df


if "snakemake" in globals():
    _methods, _steps = list(snakemake.params.methods), [int(k) for k in snakemake.params.steps]
    main(
        common.cells_from_paths(snakemake.input.nll, _methods, _steps),
        common.cells_from_paths(snakemake.input.samples, _methods, _steps),
        str(snakemake.input.reference),
        _methods,
        _steps,
        common.project_path(snakemake.params.config),
        str(snakemake.output[0]),
        labels=dict(snakemake.params.labels),
    )
