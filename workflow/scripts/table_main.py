"""Table 1: few-step NLL (bits/dim) and sample quality (FID for images, else sliced W2) per method, K = 8, 4, 2, 1.

Snakemake: input.nll / input.samples (flat lists of ``{run}/K{k}.json`` cells; guided
sample cells are ignored), input.reference; params.methods, params.steps, params.config,
params.reference (optional, default "teacher": the run of the reference row); output[0] the CSV.
"""


import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pandas as pd  # noqa: E402

import common  # noqa: E402

REFERENCE_LABEL = "Reference (teacher, dopri5)"
ANALYTIC_LABEL = "Analytic"


def columns(steps, support_mass: bool, quality: str = "sw2") -> list[str]:
    """The K column groups, descending K."""
    cols = []
    for k in common.descending(steps):
        cols += [f"K{k}_nll_bpd", f"K{k}_{quality}"] + ([f"K{k}_support_mass"] if support_mass else [])
    return cols


def build(nll_cells: dict, sample_cells: dict, reference: str, methods: list[str], steps: list[int],
          config: str, reference_run: str = "teacher") -> pd.DataFrame:
    """The table as a DataFrame (see module docstring)."""
    steps = common.descending(steps)
    ref = common.read_json(reference)
    nll = {key: common.read_json(p) for key, p in nll_cells.items() if key[0] in methods and key[1] in steps}
    smp = {key: common.read_json(p) for key, p in sample_cells.items() if key[0] in methods and key[1] in steps}
    has_mass = any("support_mass" in c for c in smp.values())
    key, quality = common.sample_metric(smp.values())
    cols = ["method", "run"] + columns(steps, has_mass, quality) + ["config", "seed"]

    def fixed_row(label, run, value):
        row = {"method": label, "run": run, "config": config, "seed": common.cell_value(ref, "train_seed", reference)}
        row.update({f"K{k}_nll_bpd": value for k in steps})
        return row

    rows = [fixed_row(REFERENCE_LABEL, reference_run, float(common.cell_value(ref, "mean_bpd", reference)))]
    if "analytic_mean_bpd" in ref:
        rows.append(fixed_row(ANALYTIC_LABEL, None, float(ref["analytic_mean_bpd"])))
    for run in methods:
        row = {"method": common.method_label(run), "run": run, "config": config}
        used = []
        for k in steps:
            for kind, cells, paths in (("NLL", nll, nll_cells), ("sample", smp, sample_cells)):
                if (run, k) not in cells:
                    raise KeyError(f"no {kind} cell for run {run!r}, K={k}")
                used.append((paths[(run, k)], cells[(run, k)]))
            n_path, s_path = nll_cells[(run, k)], sample_cells[(run, k)]
            row[f"K{k}_nll_bpd"] = float(common.cell_value(nll[(run, k)], "mean_bpd", n_path))
            row[f"K{k}_{quality}"] = float(common.cell_value(smp[(run, k)], key, s_path))
            if has_mass:
                row[f"K{k}_support_mass"] = float(smp[(run, k)].get("support_mass", float("nan")))
        row["seed"] = common.train_seed(used)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def cells_from_lists(nll_paths, sample_paths, methods, steps) -> tuple[dict, dict]:
    """Flat Snakemake input lists -> (nll_cells, sample_cells) dicts keyed by (run, k)."""
    return (common.cells_from_paths(nll_paths, methods, steps),
            common.cells_from_paths(sample_paths, methods, steps))


def main(nll_cells: dict, sample_cells: dict, reference: str, methods: list[str], steps: list[int],
         config: str, out: str, reference_run: str = "teacher") -> pd.DataFrame:
    """Build Table 1 and write it to ``out`` (CSV)."""
    df = build(nll_cells, sample_cells, reference, list(methods), [int(k) for k in steps], config, reference_run)
    common.write_csv(df, out)
    return df


if "snakemake" in globals():
    _nll, _smp = cells_from_lists(snakemake.input.nll, snakemake.input.samples,  # noqa: F821
                                  snakemake.params.methods, snakemake.params.steps)  # noqa: F821
    main(_nll, _smp, str(snakemake.input.reference), list(snakemake.params.methods),  # noqa: F821
         [int(k) for k in snakemake.params.steps], str(snakemake.params.config), str(snakemake.output[0]),  # noqa: F821
         str(getattr(snakemake.params, "reference", "teacher")))  # noqa: F821
