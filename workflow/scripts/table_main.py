"""Table 1: few-step NLL (bits/dim) and sample quality (FID for images, else sliced W2) per method, K = 8, 4, 2, 1.

Snakemake: input.nll / input.samples (flat lists of ``{run}/K{k}.json`` cells; guided
sample cells are ignored), input.reference, input.test_split (``f2d2 data --summary``'s JSON: the
last column, ``test_split``, says where the test points come from); params.methods, params.steps,
params.config, params.reference (optional, default "teacher": the run of the reference row), params.labels
({run: label}, the method column); input.training
(every run's ``train.json``: columns ``trained_steps`` and ``early_stop_step``, the step at which a calibrated
early stop ended the run, empty when it ran all its steps); output[0] the CSV. Image tables (FID) have a
column ``fid_network``: the network all sample cells' FIDs come from (source, SHA-1, resize; the cells' record).
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


def build(
    nll_cells: dict,
    sample_cells: dict,
    reference: str,
    methods: list[str],
    steps: list[int],
    config: str,
    reference_run: str = "teacher",
    test_split: str | None = None,
    training: dict[str, str] | None = None,
    *,
    labels: dict[str, str],
) -> pd.DataFrame:
    """The table as a DataFrame (see module docstring); ``labels`` {run: label} names the methods. Without
    ``test_split`` (a JSON path) no such column, without ``training`` ({run: train.json}) no ``trained_steps`` /
    ``early_stop_step`` columns."""
    steps = common.descending(steps)
    ref = common.read_json(reference)
    smp = {key: common.read_json(p) for key, p in sample_cells.items() if key[0] in methods and key[1] in steps}
    has_mass = any("support_mass" in c for c in smp.values())
    key, quality = common.sample_metric(smp.values())
    network = common.fid_network((sample_cells[k], c) for k, c in smp.items())
    cols = ["method", "run"] + columns(steps, has_mass, quality) + list(network)
    cols += list(common.TRAINING_COLUMNS if training is not None else ()) + ["config", "seed"]
    extra = {} if test_split is None else {"test_split": common.test_split(test_split)}
    cols += list(extra)

    def fixed_row(label, run, value):
        row = {
            "method": label,
            "run": run,
            "config": config,
            "seed": common.cell_value(ref, "train_seed", reference),
            **common.training_columns(run, training),
            **network,
            **extra,
        }
        row.update({f"K{k}_nll_bpd": value for k in steps})
        return row

    rows = [fixed_row(REFERENCE_LABEL, reference_run, float(common.cell_value(ref, "mean_bpd", reference)))]
    if "analytic_mean_bpd" in ref:
        rows.append(fixed_row(ANALYTIC_LABEL, None, float(ref["analytic_mean_bpd"])))

    def fill(row: dict, k: int, read: dict) -> None:
        (n_path, n), (s_path, s) = read["NLL"], read["sample"]
        row[f"K{k}_nll_bpd"] = float(common.cell_value(n, "mean_bpd", n_path))
        row[f"K{k}_{quality}"] = float(common.cell_value(s, key, s_path))
        if has_mass:
            row[f"K{k}_support_mass"] = float(s.get("support_mass", float("nan")))

    for run in methods:
        row = common.method_row(run, steps, {"NLL": nll_cells, "sample": sample_cells}, fill, labels)
        rows.append({**row, **network, **common.training_columns(run, training), "config": config, **extra})
    return pd.DataFrame(rows, columns=cols)


def cells_from_lists(nll_paths, sample_paths, methods, steps) -> tuple[dict, dict]:
    """Flat Snakemake input lists -> (nll_cells, sample_cells) dicts keyed by (run, k)."""
    return (common.cells_from_paths(nll_paths, methods, steps), common.cells_from_paths(sample_paths, methods, steps))


def main(
    nll_cells: dict,
    sample_cells: dict,
    reference: str,
    methods: list[str],
    steps: list[int],
    config: str,
    out: str,
    reference_run: str = "teacher",
    test_split: str | None = None,
    training: dict[str, str] | None = None,
    *,
    labels: dict[str, str],
) -> pd.DataFrame:
    """Build Table 1 and write it to ``out`` (CSV); ``labels`` {run: label} names the methods."""
    df = build(
        nll_cells,
        sample_cells,
        reference,
        list(methods),
        [int(k) for k in steps],
        config,
        reference_run,
        test_split,
        training,
        labels=labels,
    )
    common.write_csv(df, out)
    return df


if "snakemake" in globals():
    _nll, _smp = cells_from_lists(
        snakemake.input.nll,
        snakemake.input.samples,
        snakemake.params.methods,
        snakemake.params.steps,
    )
    main(
        _nll,
        _smp,
        str(snakemake.input.reference),
        list(snakemake.params.methods),
        [int(k) for k in snakemake.params.steps],
        common.project_path(snakemake.params.config),
        str(snakemake.output[0]),
        str(getattr(snakemake.params, "reference", "teacher")),
        str(snakemake.input.test_split),
        common.training_inputs(snakemake.input.training),
        labels=dict(snakemake.params.labels),
    )
