"""Table 3: architecture and hyperparameters of every training run.

One row per run, read from ``OUT/train/{run}/config.yaml``; nested keys are flattened
(``model.hidden``, ``train.lr``, ...), lists are written as JSON. The run's ``seed`` goes
to the ``seed`` column. Snakemake: input (flat list of config.yaml paths), params.config,
optional params.runs (row order), params.labels ({run: label}, the method column); output[0] the CSV.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402

import common  # noqa: E402


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become JSON strings."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = value
    return out


def read_yaml(path: str) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(cfg).__name__}")
    return cfg


def configs_from_paths(paths, runs=None) -> dict[str, str]:
    """Flat list of ``.../{run}/config.yaml`` paths -> {run: path}, in ``runs`` order if given."""
    found = {Path(p).parent.name: str(p) for p in paths}
    if runs is None:
        return found
    missing = [r for r in runs if r not in found]
    if missing:
        raise ValueError(f"no config.yaml among the inputs for run(s) {missing}")
    return {r: found[r] for r in runs}


def main(configs: dict[str, str], config: str, out: str, *, labels: dict[str, str]) -> pd.DataFrame:
    """configs: {run: path to its config.yaml}, rows in dict order; ``labels`` {run: label} names the methods.
    Writes the CSV to ``out``."""
    rows, keys = [], []
    for run, path in configs.items():
        cfg = read_yaml(path)
        if "seed" not in cfg:
            raise KeyError(f"{path} has no seed")
        flat = flatten({k: v for k, v in cfg.items() if k != "seed"})
        keys += [k for k in flat if k not in keys]
        label = common.method_label(run, labels)
        rows.append({"method": label, "run": run, **flat, "config": config, "seed": cfg["seed"]})
    df = pd.DataFrame(rows, columns=["method", "run"] + keys + ["config", "seed"])
    common.write_csv(df, out)
    return df


if "snakemake" in globals():
    _runs = getattr(snakemake.params, "runs", None)
    main(
        configs_from_paths([str(p) for p in snakemake.input], _runs),
        common.project_path(snakemake.params.config),
        str(snakemake.output[0]),
        labels=dict(snakemake.params.labels),
    )
