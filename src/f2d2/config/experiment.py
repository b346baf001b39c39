"""The experiment model: which training runs an experiment config has, what each one is, and how they
depend on each other. The Snakemake rules, the config checks and the benchmark all read it; it is
torch-free (the Snakefile and the launcher import it).

A *run* is a stage (named by its stage) or an ablation run, which trains an ablation's stage with one
key changed and is named ``<stage>__<ablation><value>`` (``shortcut_distill_f2d2__lam0.1``; a float value
as ``f"{value:g}"``). An ablation value equal to the stage's own value is the stage itself.

The *reference stage* is the flow-matching teacher whose adaptive (dopri5) solve every NLL is compared
with: the stage that the other stages name as ``objective.teacher``; when none names one, the first
stage that reads no other stage (the root every warm start grows from). Several different named teachers
are an error: the pipeline has one reference.

A run is *F2D2* (evaluated with its divergence head) when its resolved ``model.div_head`` is true; the
config checks see to it that every objective that trains a head (``Objective.trains_div_head``) has one.
"""

from __future__ import annotations

import hashlib
import json

from f2d2.config.resolve import TRAIN_DEFAULTS, ConfigError, apply_overrides, resolve_run, stage_dependencies

ABLATION_SEP = "__"
ABLATION_TABLES = {"div_scale": 5, "lam": 6}  # ablation name -> the paper's table number
# What does not change what a run learns. Logging keys change only how visibly it trains: they may change
# when it resumes. Its device changes where it trains (not its fingerprint), but a checkpoint's random state
# belongs to its device, so a resume keeps it. A run's label only names it in tables.
LOGGING_KEYS = ("log_every", "ckpt_every", "tensorboard")
NEUTRAL_TRAIN_KEYS = ("device", *LOGGING_KEYS)


def _value_tag(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _stage_value(cfg: dict, stage: str, key: str):
    node = resolve_run(cfg, stage)
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def ablation_runs(cfg: dict, name: str) -> list[tuple[object, str]]:
    """[(value, run)] of ablation ``name`` in the order of its values; none when its stage is unknown
    (the config checks report that)."""
    ab = cfg["ablations"][name]
    if ab.get("stage") not in (cfg.get("stages") or {}):
        return []
    own = _stage_value(cfg, ab["stage"], ab["key"])
    return [
        (v, ab["stage"] if v == own else f"{ab['stage']}{ABLATION_SEP}{name}{_value_tag(v)}")
        for v in ab.get("values", [])
    ]


def runs(cfg: dict) -> dict[str, tuple[str, list[str]]]:
    """Every training run: {run: (stage, [``key=value`` overrides of the stage's config])}, the stages first
    (no overrides), then the ablation runs in config order."""
    out = {stage: (stage, []) for stage in cfg.get("stages") or {}}
    for name, ab in (cfg.get("ablations") or {}).items():
        for value, run in ablation_runs(cfg, name):
            if run != ab["stage"]:
                out[run] = (ab["stage"], [f"{ab['key']}={json.dumps(value)}"])
    return out


def run_config(cfg: dict, run: str, stage_root: str | None = None) -> dict:
    """The resolved config ``f2d2 train --stage <stage> --set <overrides>`` trains for ``run``."""
    stage, overrides = _run(cfg, run)
    return resolve_run(apply_overrides(resolve_run(cfg, stage, stage_root=stage_root), overrides))


def fingerprint(value) -> str:
    """A short hash (16 hex digits) of a JSON-able value, the same for equal values whatever their key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def learned(run: dict) -> dict:
    """What a resolved run config says about what the run learns: less its label and NEUTRAL_TRAIN_KEYS. Its
    fingerprint (f2d2.preflight.runs) hashes this, with every objective option resolved."""
    out = {k: v for k, v in run.items() if k != "label"}
    out["train"] = {k: v for k, v in run["train"].items() if k not in NEUTRAL_TRAIN_KEYS}
    return out


def resume_key(run: dict) -> dict:
    """The part of a run config that must match for a resume: less its label and LOGGING_KEYS, and its length
    unless the lr follows a cosine (which reaches 0 at train.steps: a longer cosine run is another run); train
    keys a checkpoint's config predates count as their defaults."""
    tr = {**TRAIN_DEFAULTS, **run["train"]}
    free = LOGGING_KEYS + (("steps",) if tr["lr_schedule"] == "constant" else ())
    return {**{k: v for k, v in run.items() if k != "label"}, "train": {k: v for k, v in tr.items() if k not in free}}


def _run(cfg: dict, run: str) -> tuple[str, list[str]]:
    found = runs(cfg)
    if run not in found:
        raise ConfigError(f"{run!r} is not a training run of the config; runs: {list(found)}")
    return found[run]


def dependencies(cfg: dict, run: str) -> list[str]:
    """The stages whose checkpoints ``run`` reads (warm start, teacher)."""
    return stage_dependencies(cfg, _run(cfg, run)[0])


def stage_order(cfg: dict, wanted: list[str] | None = None) -> list[str]:
    """Stages in dependency order: all, or ``wanted`` and what they need. Passes over the stages in config
    order, each taking every stage whose dependencies are taken."""
    stages = list(cfg.get("stages") or {})
    deps = {s: stage_dependencies(cfg, s) for s in stages}
    if wanted is not None:
        need, todo = set(), list(wanted)
        while todo:
            s = todo.pop()
            if s not in deps:
                raise ConfigError(f"{s!r} is not a stage of the config; stages: {stages}")
            if s not in need:
                need.add(s)
                todo.extend(deps[s])
        stages = [s for s in stages if s in need]
    order: list[str] = []
    while len(order) < len(stages):
        taken = len(order)
        for s in stages:
            if s not in order and all(d in order for d in deps[s]):
                order.append(s)
        if len(order) == taken:
            raise ConfigError(f"stages {[s for s in stages if s not in order]} depend on each other in a circle")
    return order


def reference_stage(cfg: dict) -> str:
    """The teacher stage of the NLL reference (see the module docstring)."""
    stages = cfg.get("stages") or {}
    teachers = (resolve_run(cfg, s)["objective"].get("teacher") for s in stages)
    named = list(dict.fromkeys(t for t in teachers if isinstance(t, str) and t in stages))
    if len(named) > 1:
        raise ConfigError(
            f"stages name different teachers {named} as objective.teacher; the pipeline compares "
            "every NLL with one reference teacher"
        )
    if named:
        return named[0]
    roots = [s for s in stages if not stage_dependencies(cfg, s)]
    if not roots:
        raise ConfigError("no stage can be the reference teacher: every stage reads another stage")
    return roots[0]


def f2d2_runs(cfg: dict) -> list[str]:
    """The runs evaluated with their divergence head (resolved model.div_head true), in ``runs`` order."""
    return [run for run in runs(cfg) if run_config(cfg, run)["model"].get("div_head") is True]


def f2d2_stages(cfg: dict) -> list[str]:
    """The F2D2 runs that are stages of the config (not ablation runs), in the stages' order."""
    f2d2 = f2d2_runs(cfg)
    return [stage for stage in cfg["stages"] if stage in f2d2]


def ablation_tables(cfg: dict) -> dict[str, int]:
    """{ablation name: table number} of the config's ablations that have a table, in table order."""
    ablations = cfg.get("ablations") or {}
    return {name: n for name, n in ABLATION_TABLES.items() if name in ablations}
