"""Tables 5 and 6: ablation of one F2D2 hyperparameter (e.g. div_scale, lam).

Rows: the baseline runs first (e.g. the non-F2D2 "Shortcut-Distill", its NLL from its
own Euler cells; ``value`` empty), then one row per ablation value in the given order.
Columns ``K{k}_nll_bpd``, ``K{k}_abs_err_nats``, ``K{k}_sw2`` (``K{k}_fid`` for images) for K = 8, 4, 2, 1, then
(image tables) ``fid_network`` as in Table 1, then ``key``, ``value``, ``config``, ``seed``. Snakemake: input.nll,
input.samples (flat lists); params.key, params.values, params.runs (one per value), params.baselines (optional),
params.steps, params.config, params.labels ({run: label}, the method column); output[0] the CSV.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pandas as pd  # noqa: E402

import common  # noqa: E402


def _row(
    run: str, nll_cells: dict, sample_cells: dict, steps: list[int], metric: tuple[str, str], labels: dict[str, str]
) -> dict:
    def fill(row: dict, k: int, read: dict) -> None:
        (n_path, n), (s_path, s) = read["NLL"], read["sample"]
        row[f"K{k}_nll_bpd"] = float(common.cell_value(n, "mean_bpd", n_path))
        row[f"K{k}_abs_err_nats"] = float(common.cell_value(n, "mean_abs_err_nats", n_path))
        row[f"K{k}_{metric[1]}"] = float(common.cell_value(s, metric[0], s_path))

    return common.method_row(run, steps, {"NLL": nll_cells, "sample": sample_cells}, fill, labels)


def main(
    key: str,
    values: list,
    runs: list[str],
    baselines: list[str],
    nll_cells: dict,
    sample_cells: dict,
    steps: list[int],
    config: str,
    out: str,
    *,
    labels: dict[str, str],
) -> pd.DataFrame:
    """values[i] is the setting of ``key`` in training run runs[i]; cells keyed by (run, k); ``labels``
    {run: label} names the methods. Writes ``out``."""
    values, runs = list(values), list(runs)
    if len(values) != len(runs):
        raise ValueError(f"{len(values)} values {values} but {len(runs)} runs {runs}")
    steps = common.descending(steps)
    read = [(p, common.read_json(p)) for p in sample_cells.values()]
    metric = common.sample_metric(c for _, c in read)
    network = common.fid_network(read)
    cols = ["method", "run"]
    for k in steps:
        cols += [f"K{k}_nll_bpd", f"K{k}_abs_err_nats", f"K{k}_{metric[1]}"]
    cols += [*network, "key", "value", "config", "seed"]
    rows = []
    for run in baselines or []:
        row = _row(run, nll_cells, sample_cells, steps, metric, labels)
        rows.append({**row, **network, "key": key, "value": None, "config": config})
    for value, run in zip(values, runs):
        row = _row(run, nll_cells, sample_cells, steps, metric, labels)
        rows.append({**row, **network, "key": key, "value": value, "config": config})
    df = pd.DataFrame(rows, columns=cols)
    common.write_csv(df, out)
    return df


if "snakemake" in globals():
    _p = snakemake.params
    _base = list(getattr(_p, "baselines", None) or [])
    _all, _steps = list(_p.runs) + _base, [int(k) for k in _p.steps]
    main(
        str(_p.key),
        list(_p.values),
        list(_p.runs),
        _base,
        common.cells_from_paths(snakemake.input.nll, _all, _steps),
        common.cells_from_paths(snakemake.input.samples, _all, _steps),
        _steps,
        common.project_path(_p.config),
        str(snakemake.output[0]),
        labels=dict(_p.labels),
    )
