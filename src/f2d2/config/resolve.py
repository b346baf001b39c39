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
import math
from pathlib import Path
from typing import Any

import yaml

TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 2000,
    "batch_size": 4096,
    "lr": 1e-3,
    "warmup": 100,
    "lr_schedule": "constant",
    "ema_decay": 0.999,
    "grad_clip": None,
    "log_every": 50,
    "ckpt_every": 500,
    "device": "cpu",
    "init_from": None,
    "early_stop": None,
}

# train.lr_schedule: after the linear warm-up, "constant" keeps lr, "cosine" decays it to 0 at train.steps.
LR_SCHEDULES = ("constant", "cosine")

# train.early_stop (null: off), see f2d2.training.early_stop; a mapping is completed with these values.
EARLY_STOP_DEFAULTS: dict[str, Any] = {
    "every": 500,
    "n_val": 1000,
    "steps": 1,
    "target_bpd": None,
    "tol": 0.02,
    "seed": 0,
}

RUN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "checkerboard"},
    "model": {"arch": "mlp"},
    "objective": {"name": "flow_matching"},
    "train": TRAIN_DEFAULTS,
}

RUN_KEYS = set(RUN_DEFAULTS)
# Keys the pipeline reads (the Snakefile and config/schema.yaml); training ignores them.
PIPELINE_KEYS = {"experiment", "outdir", "cluster", "eval", "ablations", "figures", "resources"}
EXPERIMENT_KEYS = RUN_KEYS | PIPELINE_KEYS | {"stages"}


class ConfigError(ValueError):
    """A config value that is missing, unknown or out of range; the message names the key."""


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
    return [run[sec][key] for sec, key in STAGE_REFERENCES if run[sec].get(key) in stages]


def resolve_run(cfg: dict, stage: str | None = None, stage_root: str | Path | None = None) -> dict:
    """The complete config of one training run: defaults <- shared sections <- stages[stage].

    With ``stage_root``, references to other stages by name become their checkpoint paths.
    """
    unknown = set(cfg) - EXPERIMENT_KEYS
    if unknown:
        raise ConfigError(f"unknown top-level config key(s) {sorted(unknown)}; allowed: {sorted(EXPERIMENT_KEYS)}")
    run = deep_merge(RUN_DEFAULTS, {k: v for k, v in cfg.items() if k in RUN_KEYS})
    if stage is not None:
        stages = cfg.get("stages") or {}
        if stage not in stages:
            raise ConfigError(f"stage {stage!r} is not in the config's stages; available: {sorted(stages)}")
        extra = set(stages[stage] or {}) - RUN_KEYS
        if extra:
            raise ConfigError(f"stages.{stage} has unknown key(s) {sorted(extra)}; allowed: {sorted(RUN_KEYS)}")
        run = deep_merge(run, stages[stage] or {})
    bad = set(run["train"]) - set(TRAIN_DEFAULTS)
    if bad:
        raise ConfigError(f"unknown train key(s) {sorted(bad)}; allowed: {sorted(TRAIN_DEFAULTS)}")
    _check_train(run["train"])
    if run["train"]["early_stop"] is not None:
        run["train"]["early_stop"] = {**EARLY_STOP_DEFAULTS, **run["train"]["early_stop"]}
    if stage_root is not None:
        stages = cfg.get("stages") or {}
        for sec, key in STAGE_REFERENCES:
            ref = run[sec].get(key)
            if isinstance(ref, str) and ref in stages:
                run[sec][key] = str(Path(stage_root) / ref / "checkpoint.pt")
    return run


def _check_train(tr: dict) -> None:
    for key in ("steps", "batch_size", "log_every", "ckpt_every"):
        if not isinstance(tr[key], int) or tr[key] < 1:
            raise ConfigError(f"train.{key} = {tr[key]!r}; expected an integer >= 1")
    if not isinstance(tr["warmup"], int) or tr["warmup"] < 0:
        raise ConfigError(f"train.warmup = {tr['warmup']!r}; expected an integer >= 0")
    if tr["lr_schedule"] not in LR_SCHEDULES:
        raise ConfigError(f"train.lr_schedule = {tr['lr_schedule']!r}; expected one of {list(LR_SCHEDULES)}")
    if not (isinstance(tr["lr"], (int, float)) and tr["lr"] > 0):
        raise ConfigError(f"train.lr = {tr['lr']!r}; expected a number > 0")
    if not (isinstance(tr["ema_decay"], (int, float)) and 0 <= tr["ema_decay"] < 1):
        raise ConfigError(f"train.ema_decay = {tr['ema_decay']!r}; expected a number in [0, 1)")
    if tr["grad_clip"] is not None and not (isinstance(tr["grad_clip"], (int, float)) and tr["grad_clip"] > 0):
        raise ConfigError(f"train.grad_clip = {tr['grad_clip']!r}; expected null or a number > 0")
    _check_early_stop(tr["early_stop"])


def _check_early_stop(es: Any) -> None:
    if es is None:
        return
    if not isinstance(es, dict):
        raise ConfigError(f"train.early_stop = {es!r}; expected null (off) or a mapping with keys "
                          f"{sorted(EARLY_STOP_DEFAULTS)}")
    unknown = set(es) - set(EARLY_STOP_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown train.early_stop key(s) {sorted(unknown)}; allowed: {sorted(EARLY_STOP_DEFAULTS)}")
    es = {**EARLY_STOP_DEFAULTS, **es}

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for key in ("every", "n_val", "steps"):
        if not (is_int(es[key]) and es[key] >= 1):
            raise ConfigError(f"train.early_stop.{key} = {es[key]!r}; expected an integer >= 1")
    if not (is_int(es["seed"]) and es["seed"] >= 0):
        raise ConfigError(f"train.early_stop.seed = {es['seed']!r}; expected an integer >= 0")
    if es["target_bpd"] is not None and not is_number(es["target_bpd"]):
        raise ConfigError(f"train.early_stop.target_bpd = {es['target_bpd']!r}; expected null (the teacher's "
                          "reference BPD on the validation split) or a finite number of bits/dim")
    if not (is_number(es["tol"]) and es["tol"] > 0):
        raise ConfigError(f"train.early_stop.tol = {es['tol']!r}; expected a number of bits/dim > 0")
