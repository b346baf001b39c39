"""Config checks, run before any job or training step: first each key against the schema
(``f2d2.config.validate``), then the rules that span several keys or need the registries of
names, the filesystem or the hardware.

``check_experiment(cfg)`` checks a whole experiment (every stage and ablation run, the
evaluation grid, the resources); the Snakefile calls it before building the DAG.
``check_run(run)`` checks the one resolved run ``f2d2 train`` is about to train. Both
raise one ConfigError listing every problem; each line names the key path, the value
and what is allowed.
"""

from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Collection

import torch

from f2d2.config import validate
from f2d2.config.resolve import ConfigError, deep_merge, resolve_run
from f2d2.config.resources import DEFAULT_CLUSTER, Resources
from f2d2.data import DATASETS
from f2d2.training.early_stop import early_stop_problems
from f2d2.training.ema import start_share
from f2d2.nets import ARCHITECTURES
from f2d2.objectives import OBJECTIVES

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _signature(build: Callable) -> dict[str, inspect.Parameter]:
    """Keyword parameters of a constructor (functools.partial keywords excluded)."""
    fixed = set(getattr(build, "keywords", {}) or {})
    params = inspect.signature(getattr(build, "func", build)).parameters
    return {k: p for k, p in params.items() if k not in fixed | {"self", "device"}}


def _check_registry(section: str, key: str, cfg: dict, known: dict) -> tuple[list[str], dict | None]:
    """Problems with a section's name and option keys; also the constructor's parameters when the name is known."""
    name = cfg.get(key)
    if name not in known:
        return [f"{section}.{key} = {name!r} is unknown; allowed: {sorted(known)}"], None
    params = _signature(known[name])
    options = set(cfg) - {key}
    problems = []
    unknown = sorted(options - set(params))
    if unknown:
        problems.append(f"{section} {name!r} has no option(s) {unknown}; allowed: {sorted(params)}")
    missing = sorted(k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in options)
    if missing:
        problems.append(f"{section} {name!r} needs {', '.join(f'{section}.{k}' for k in missing)}")
    return problems, params


def _check_reference(key: str, value: Any, stages: Collection[str], what: str) -> list[str]:
    """A stage name (experiment check) or an existing file."""
    if value is None or (isinstance(value, str) and value in stages):
        return []
    if not isinstance(value, str) or not Path(value).is_file():
        names = f"a stage name ({sorted(stages)}) or " if stages else ""
        return [f"{key} = {value!r} is not {names}an existing {what} file"]
    return []


def run_problems(run: dict, stages: Collection[str] = (), data_files: bool = True) -> list[str]:
    """Problems of one resolved run config; ``stages`` are the names a reference may use instead of a path;
    ``data_files=False`` leaves out whether data.path / data.root exist. Values the schema refuses come
    alone: the other rules assume the keys' types."""
    problems = validate.problems(run, "run")
    if problems:
        return problems
    obj, model, data = run["objective"], run["model"], run["data"]

    found, params = _check_registry("objective", "name", obj, OBJECTIVES)
    problems += found
    if params is not None:
        name = obj["name"]
        f2d2 = name.endswith("_f2d2")
        div_source = obj.get("div_source", params["div_source"].default) if "div_source" in params else None
        needs_teacher = ("distill" in name or (f2d2 and div_source == "teacher")
                         or obj.get("tangent") == "teacher")
        if needs_teacher and obj.get("teacher") is None:
            problems.append(f"objective.teacher = None, but objective {name!r} needs a teacher: a stage name or a "
                            "flow-matching checkpoint path")
        problems += _check_reference("objective.teacher", obj.get("teacher"), stages, "checkpoint")
        if f2d2 and model.get("div_head") is not True:
            problems.append(f"model.div_head = {model.get('div_head')!r}, but objective {name!r} trains a "
                            "divergence head; set model.div_head: true")

    found, _ = _check_registry("model", "arch", model, ARCHITECTURES)
    problems += found

    found, _ = _check_registry("data", "name", data, DATASETS)
    problems += found
    for key, kind, exists in (("path", "file", Path.is_file), ("root", "folder", Path.is_dir)):
        value = data.get(key)
        if data_files and value is not None and not (isinstance(value, str) and exists(Path(value))):
            problems.append(f"data.{key} = {value!r} is not an existing {kind} (relative paths start from "
                            f"{Path.cwd()})")

    problems += _check_reference("train.init_from", run["train"].get("init_from"), stages, "checkpoint")
    problems += early_stop_problems(run)
    problems += stage_schedule_problems(run)
    return problems


WARM_START_SHARE = 0.05  # the most of its warm start a run's EMA may keep where the run can end


class ConfigWarning(UserWarning):
    """A config that runs but likely not as meant; printed at start-up."""


def stage_schedule_problems(run: dict) -> list[str]:
    """Whether a run's learning-rate warm-up and EMA (the model every evaluation uses) fit its length.

    Errors: a warm-up longer than ``train.steps``; a ramp-up without a half-life; a warm-started run with a
    divergence head (F2D2: the head starts at zero) whose EMA keeps more than WARM_START_SHARE of the warm
    start at ``train.steps``. Warned (:class:`ConfigWarning`): that share for other warm starts, and at the
    first ``train.early_stop`` check, where a run may also end."""
    tr = run["train"]
    problems = []
    if tr["warmup"] > tr["steps"]:
        problems.append(f"train.warmup = {tr['warmup']} is longer than train.steps = {tr['steps']}: the learning "
                        f"rate never exceeds {tr['steps'] / tr['warmup']:.0%} of train.lr = {tr['lr']}; set "
                        "train.warmup <= train.steps (a stage may set its own)")
    if tr["ema_rampup"] is not None and tr["ema_halflife_steps"] is None:
        return problems + [f"train.ema_rampup = {tr['ema_rampup']} ramps up train.ema_halflife_steps = None; set "
                           "train.ema_halflife_steps or train.ema_rampup: null"]
    if tr["init_from"] is None:
        return problems
    line = _warm_start_line(tr, tr["steps"], "train.steps")
    if line and run["model"].get("div_head") is True:
        problems.append(f"{line}; the divergence head starts at zero, so the EMA's likelihood would be off")
    elif line:
        warnings.warn(f"objective {run['objective'].get('name')!r}: {line}", ConfigWarning, stacklevel=3)
    es = tr["early_stop"]
    line = _warm_start_line(tr, es["every"], "train.early_stop.every") if es and es["every"] < tr["steps"] else None
    if line:
        warnings.warn(f"objective {run['objective'].get('name')!r}: {line}, where train.early_stop may end the run",
                      ConfigWarning, stacklevel=3)
    return problems


def _warm_start_line(tr: dict, steps: int, key: str) -> str | None:
    """What the EMA keeps of the warm start at step ``steps`` (named ``key``) when that is too much, else None."""
    share = start_share(tr, steps)
    if share <= WARM_START_SHARE:
        return None
    halflife = (steps - 1) / math.log2(1 / WARM_START_SHARE)
    if tr["ema_halflife_steps"] is None:
        ema = f"train.ema_decay = {tr['ema_decay']}"
        fix = f"train.ema_decay <= {WARM_START_SHARE ** (1 / max(1, steps - 1)):.5g}, "
    else:
        ramp = f" with train.ema_rampup = {tr['ema_rampup']}" if tr["ema_rampup"] is not None else ""
        ema, fix = f"train.ema_halflife_steps = {tr['ema_halflife_steps']}{ramp}", ""
    return (f"{ema} keeps {share:.1%} of the warm start (train.init_from = {tr['init_from']!r}) in the EMA at "
            f"{key} = {steps}; expected <= {WARM_START_SHARE:.0%}: set {fix}train.ema_halflife_steps <= "
            f"{halflife:.0f} or train.ema_rampup (e.g. 0.05)")


def check_run(run: dict) -> None:
    """Before ``f2d2 train``: a resolved run's values (see ``resolve_run``), its files and its device."""
    problems = run_problems(run)
    device = run["train"]["device"]
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            problems.append(f"train.device = {device!r}, but this machine has no CUDA device; use 'cpu'")
    validate.raise_problems(problems)


def fits_step_grid(k: Any, run: dict) -> bool:
    """Whether K >= 1 uniform steps of size 1/K are among the sizes 2^-j (j = 0..max_log2) a Shortcut run
    trains; other objectives (flow matching, MeanFlow) take any K."""
    if not str(run["objective"].get("name", "")).startswith("shortcut"):
        return True
    max_log2 = run["objective"].get("max_log2", 7)
    return k & (k - 1) == 0 and _is_int(max_log2) and k <= 2 ** max_log2


def _grid_problems(key: str, ks: list, runs: dict[str, dict]) -> list[str]:
    """One line per (K, max_log2) some Shortcut stages cannot take; the schema has checked that K >= 1."""
    bad: dict[tuple, list[str]] = {}
    for k in ks:
        for name, run in runs.items():
            if not fits_step_grid(k, run):
                bad.setdefault((k, run["objective"].get("max_log2", 7)), []).append(name)
    return [
        f"{key}: K = {k!r} does not fit the step grid of stage(s) {names}: a Shortcut model with "
        f"objective.max_log2 = {m} is trained on step sizes 2^-j, j = 0..{m}, so K must be a power of two "
        f"<= {2 ** m if _is_int(m) else '2^max_log2'}" for (k, m), names in bad.items()]


def experiment_runs(cfg: dict) -> dict[str, dict]:
    """Every training run of an experiment: the stages and the ablation runs, name -> resolved config."""
    runs = {stage: resolve_run(cfg, stage) for stage in cfg.get("stages") or {}}
    for name, ab in (cfg.get("ablations") or {}).items():
        section, _, key = str(ab.get("key", "")).partition(".")
        for value in ab.get("values", []):
            if ab.get("stage") in runs:
                runs[f"ablations.{name} value {value!r}"] = deep_merge(runs[ab["stage"]], {section: {key: value}})
    return runs


def _resource_problems(cfg: dict, runs: dict[str, dict]) -> list[str]:
    """Resources a job cannot get or use: GPUs this machine lacks, a batch the GPUs cannot split."""
    problems = []
    cluster = cfg.get("cluster", DEFAULT_CLUSTER)
    for kind, res in (cfg.get("resources") or {}).items():
        key = f"resources.{kind}"
        r = Resources(**res)
        if r.gpus > 0 and r.tasks_per_node not in (1, r.gpus):
            problems.append(f"{key}.tasks_per_node = {r.tasks_per_node} with {key}.gpus = {r.gpus}; expected 1 "
                            f"(one process for all GPUs) or {r.gpus} (one process per GPU)")
        if r.gpus > 0 and cluster in ("local", "inline"):
            have = torch.cuda.device_count()
            if have < r.gpus:
                problems.append(f"{key}.gpus = {r.gpus} with cluster = {cluster!r}, but this machine has {have} "
                                f"CUDA device(s); lower {key}.gpus or run on SLURM (cluster: slurm)")
        split = max(r.gpus, r.tasks_per_node)  # processes (or GPUs) that share each batch
        if kind == "train" and split > 1:
            what = f"{key}.gpus = {r.gpus}" if r.gpus >= r.tasks_per_node else f"{key}.tasks_per_node = {split}"
            batches: dict[int, list[str]] = {}
            for run_name, run in runs.items():
                if run["train"]["batch_size"] % split:
                    batches.setdefault(run["train"]["batch_size"], []).append(_where(run_name, runs))
            problems += [f"train.batch_size = {batch} (in {', '.join(names)}) is not divisible by {what}; "
                         f"use a multiple of {split}" for batch, names in batches.items()]
    return problems


def _where(run_name: str, runs: dict) -> str:
    return run_name if run_name.startswith("ablations.") else f"stages.{run_name}"


def check_experiment(cfg: dict, data_files: bool = True) -> None:
    """Every semantic check of an experiment config; raises one ConfigError listing all problems.

    ``data_files=False``: not whether the data files exist (the pipeline checks them when it starts,
    so that a dry run lists the DAG of a preset whose data is elsewhere)."""
    validate.validate_experiment(cfg)
    try:
        runs = experiment_runs(cfg)
    except ConfigError as e:
        raise ConfigError(f"invalid config:\n  - {e}") from None
    stages = list(cfg.get("stages") or {})
    where: dict[str, list[str]] = {}  # problem -> the runs that have it (a shared value: all of them)
    for name, run in runs.items():
        found = run_problems(run, stages, data_files)  # with the values an ablation sets
        for p in found:
            where.setdefault(p, []).append(_where(name, runs))
    problems = [f"{p} (in {'every run' if len(names) == len(runs) > 1 else ', '.join(names)})"
                for p, names in where.items()]

    stage_runs = {name: runs[name] for name in stages}
    problems += _grid_problems("eval.steps", list((cfg.get("eval") or {}).get("steps", [])), stage_runs)
    density = (cfg.get("figures") or {}).get("density") or {}
    unknown = [name for name in density.get("runs", []) if name not in stages]
    if unknown:
        problems.append(f"figures.density.runs: {unknown} are not stages; stages: {sorted(stages)}")
    if density:
        shown = {name: runs[name] for name in density.get("runs", []) if name in stages}
        problems += _grid_problems("figures.density.steps", [density.get("steps")], shown)

    for name, ab in (cfg.get("ablations") or {}).items():
        if ab.get("stage") not in stages:
            problems.append(f"ablations.{name}.stage = {ab.get('stage')!r} is not a stage; stages: {sorted(stages)}")
        for base in ab.get("baselines", []):
            if base not in stages:
                problems.append(f"ablations.{name}.baselines: {base!r} is not a stage; stages: {sorted(stages)}")
    problems += _resource_problems(cfg, runs)
    validate.raise_problems(problems)
