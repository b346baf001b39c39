"""Experiment configs: plain nested dicts read from YAML.

An experiment file holds shared sections (``seed``, ``data``, ``model``,
``objective``, ``train``) and ``stages``: named partial configs (``teacher``, ...)
merged over the shared sections. ``resolve_run(cfg, stage)`` gives the complete
config of one training run; it is what a checkpoint records.

A stage refers to another stage's result by its name in ``train.init_from``
(warm start) and ``objective.teacher``; ``resolve_run`` turns such a name into
``<stage_root>/<name>/checkpoint.pt``. Any other value there is a file path.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from f2d2.config.schema import defaults, definition, schema
from f2d2.config.validate import ConfigError, problems, raise_problems, unknown_keys

# Stated in the schema: a run's defaults (seed, data and model and objective names, train.*) and those
# that complete a train.early_stop mapping (null: off; see f2d2.training.early_stop).
RUN_DEFAULTS: dict[str, Any] = defaults(definition("run"))
TRAIN_DEFAULTS: dict[str, Any] = RUN_DEFAULTS["train"]
EARLY_STOP_DEFAULTS: dict[str, Any] = defaults(definition("early_stop"))

RUN_KEYS = set(definition("run")["properties"])
# The run keys, "stages" and the keys only the pipeline reads (the Snakefile); training ignores those.
EXPERIMENT_KEYS = set(schema()["properties"])


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    with path.open() as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(cfg).__name__}")
    return cfg


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: ``over`` merged into ``base`` recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings (value parsed as YAML) to a copy of cfg."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a mapping")
        node[leaf] = _parse_value(raw)
    return cfg


def _parse_value(raw: str):
    """YAML scalar, except that numbers YAML 1.1 reads as strings (``3e-4``) become floats."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


STAGE_REFERENCES = (("train", "init_from"), ("objective", "teacher"))


def stage_dependencies(cfg: dict, stage: str) -> list[str]:
    """Names of the stages whose checkpoints ``stage`` reads (warm start, teacher)."""
    stages = cfg.get("stages") or {}
    run = resolve_run(cfg, stage)
    refs = (run[sec].get(key) for sec, key in STAGE_REFERENCES)
    return [ref for ref in refs if isinstance(ref, str) and ref in stages]


def resolve_run(cfg: dict, stage: str | None = None, stage_root: str | Path | None = None) -> dict:
    """The complete config of one training run: defaults <- shared sections <- stages[stage].

    The shared sections and the stage are first checked against the schema (a ConfigError lists every bad
    key). With ``stage_root``, references to other stages by name become their checkpoint paths.
    """
    shared = {k: v for k, v in cfg.items() if k in RUN_KEYS}
    # A stage's label names one run: a resolved run may carry it, an experiment file's top level may not.
    allowed = EXPERIMENT_KEYS | ({"label"} if "stages" not in cfg else set())
    found = unknown_keys(cfg, allowed) + problems(shared, "run")
    stages = cfg.get("stages") or {}
    if stage is not None:
        if stage not in stages:
            raise ConfigError(f"stage {stage!r} is not in the config's stages; available: {sorted(stages)}")
        found += problems(stages[stage] or {}, "run", prefix=f"stages.{stage}")
    raise_problems(found)
    run = deep_merge(RUN_DEFAULTS, shared)
    if stage is not None:
        run = deep_merge(run, stages[stage] or {})
    if run["train"]["early_stop"] is not None:
        run["train"]["early_stop"] = {**EARLY_STOP_DEFAULTS, **run["train"]["early_stop"]}
    if stage_root is not None:
        for sec, key in STAGE_REFERENCES:
            ref = run[sec].get(key)
            if isinstance(ref, str) and ref in stages:
                run[sec][key] = str(Path(stage_root) / ref / "checkpoint.pt")
    return run
