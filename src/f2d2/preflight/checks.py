"""Pre-flight checks, run before any job or training step: first each key against the schema
(``f2d2.config.validate``) and each objective option against its declaration (``f2d2.objectives``), then
the rules that span several keys or need the registries of names, the filesystem or the hardware. Every
error an objective's constructor can raise is reported here, with the key and the value.

``check_experiment(cfg)`` checks a whole experiment (every stage and ablation run, the
evaluation grid, the resources); the Snakefile calls it before building the DAG.
``check_run(run)`` checks the one resolved run ``f2d2 train`` is about to train. Both
raise one ConfigError listing every problem; each line names the key path, the value
and what is allowed.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from f2d2.config import experiment, validate
from f2d2.config.resolve import ConfigError, apply_overrides, resolve_run
from f2d2.config.resources import DEFAULT_CLUSTER, Resources
from f2d2.data import DATASETS
from f2d2.data.points import split_problem
from f2d2.nets import ARCHITECTURES
from f2d2.objectives import Objective, describe, option_problems_of
from f2d2.registry import REQUIRED, options_of
from f2d2.training.early_stop import early_stop_problems, first_check
from f2d2.training.ema import start_share
from f2d2.training.speed import compiler_problem, speed_problems


def _check_registry(section: str, key: str, cfg: dict, known: dict) -> tuple[list[str], dict | None]:
    """Problems with a section's name and option keys; also the constructor's options when the name is known."""
    name = cfg.get(key)
    if name not in known:
        return [f"{section}.{key} = {name!r} is unknown; allowed: {sorted(known)}"], None
    params = options_of(known[name])
    options = set(cfg) - {key}
    problems = []
    unknown = sorted(options - set(params))
    if unknown:
        problems.append(f"{section} {name!r} has no option(s) {unknown}; allowed: {sorted(params)}")
    missing = sorted(k for k, default in params.items() if default is REQUIRED and k not in options)
    if missing:
        problems.append(f"{section} {name!r} needs {', '.join(f'{section}.{k}' for k in missing)}")
    return problems, params


def _check_reference(key: str, value: Any, stages: Collection[str], what: str) -> list[str]:
    """A stage name (experiment check), an existing file, or an outside model whose weights file exists
    (its factory is imported only when training starts: that is the only user code a config runs)."""
    if value is None or (isinstance(value, str) and value in stages):
        return []
    if isinstance(value, dict):  # the schema has checked its keys
        path = value["state_dict"]
        return [] if Path(path).is_file() else [f"{key}.state_dict = {path!r} is not an existing file"]
    if not isinstance(value, str) or not Path(value).is_file():
        names = f"a stage name ({sorted(stages)}) or " if stages else ""
        return [f"{key} = {value!r} is not {names}an existing {what} file"]
    return []


def run_problems(run: dict, stages: Collection[str] = (), data_files: bool = True) -> list[str]:
    """Problems of one resolved run config; ``stages`` are the names a reference may use instead of a path;
    ``data_files=False`` leaves out whether data.path / data.test_path / data.root exist. Values the schema refuses come
    alone: the other rules assume the keys' types."""
    problems = validate.problems(run, "run")
    if problems:
        return problems
    obj, model, data = run["objective"], run["model"], run["data"]

    objective, found = _described(run)
    problems += found
    if objective is not None:
        name = obj["name"]
        if objective.needs_teacher and obj.get("teacher") is None:
            problems.append(
                f"objective.teacher = None, but objective {name!r} needs a teacher: a stage name or a "
                "flow-matching checkpoint path"
            )
        problems += _check_reference("objective.teacher", obj.get("teacher"), stages, "checkpoint")
        if objective.needs_start and run["train"].get("init_from") is None:
            problems.append(
                f"objective.self_source = 'start', but train.init_from = None: objective {name!r} then takes its "
                "own velocity from the network it warm-starts from; name a stage or a checkpoint there"
            )
        if objective.trains_div_head and model.get("div_head") is not True:
            problems.append(
                f"model.div_head = {model.get('div_head')!r}, but objective {name!r} trains a "
                "divergence head; set model.div_head: true"
            )

    found, _ = _check_registry("model", "arch", model, ARCHITECTURES)
    problems += found

    found, _ = _check_registry("data", "name", data, DATASETS)
    problems += found
    split = split_problem(data.get("test_path"), data.get("test_fraction"))
    problems += [split] if split else []
    for key, kind, exists in (
        ("path", "file", Path.is_file),
        ("test_path", "file", Path.is_file),
        ("root", "folder", Path.is_dir),
    ):
        value = data.get(key)
        if data_files and value is not None and not (isinstance(value, str) and exists(Path(value))):
            problems.append(
                f"data.{key} = {value!r} is not an existing {kind} (relative paths start from {Path.cwd()})"
            )

    problems += _check_reference("train.init_from", run["train"].get("init_from"), stages, "checkpoint")
    problems += early_stop_problems(run)
    problems += stage_schedule_problems(run)
    problems += tensorboard_problems(run)
    problems += speed_problems(run["train"])
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
        problems.append(
            f"train.warmup = {tr['warmup']} is longer than train.steps = {tr['steps']}: the learning "
            f"rate never exceeds {tr['steps'] / tr['warmup']:.0%} of train.lr = {tr['lr']}; set "
            "train.warmup <= train.steps (a stage may set its own)"
        )
    if tr["ema_rampup"] is not None and tr["ema_halflife_steps"] is None:
        return problems + [
            f"train.ema_rampup = {tr['ema_rampup']} ramps up train.ema_halflife_steps = None; set "
            "train.ema_halflife_steps or train.ema_rampup: null"
        ]
    if tr["init_from"] is None:
        return problems
    line = _warm_start_line(tr, tr["steps"], "train.steps")
    if line and run["model"].get("div_head") is True:
        problems.append(f"{line}; the divergence head starts at zero, so the EMA's likelihood would be off")
    elif line:
        warnings.warn(f"objective {run['objective'].get('name')!r}: {line}", ConfigWarning, stacklevel=3)
    es = tr["early_stop"]
    first = first_check(es) if es else None
    key = "train.early_stop.every" if es and first == es["every"] else "the first train.early_stop check"
    line = _warm_start_line(tr, first, key) if es and first < tr["steps"] else None
    if line:
        warnings.warn(
            f"objective {run['objective'].get('name')!r}: {line}, where train.early_stop may end the run",
            ConfigWarning,
            stacklevel=3,
        )
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
    return (
        f"{ema} keeps {share:.1%} of the warm start (train.init_from = {tr['init_from']!r}) in the EMA at "
        f"{key} = {steps}; expected <= {WARM_START_SHARE:.0%}: set {fix}train.ema_halflife_steps <= "
        f"{halflife:.0f} or train.ema_rampup (e.g. 0.05)"
    )


def tensorboard_problems(run: dict) -> list[str]:
    """train.tensorboard needs the optional tensorboard package."""
    if run["train"].get("tensorboard") and importlib.util.find_spec("tensorboard") is None:
        return ["train.tensorboard = true needs the tensorboard package: pip install 'f2d2[tensorboard]'"]
    return []


def check_run(run: dict) -> None:
    """Before ``f2d2 train``: a resolved run's values (see ``resolve_run``), its files and its device."""
    problems = run_problems(run)
    device = run["train"]["device"]
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            problems.append(f"train.device = {device!r}, but this machine has no CUDA device; use 'cpu'")
    if run["train"]["compile"] is True and isinstance(device, str) and (why := compiler_problem(torch.device(device))):
        problems.append(f"train.compile = true on train.device = {device!r}: {why}; or set train.compile: false")
    validate.raise_problems(problems)


def _described(run: dict) -> tuple[Objective | None, list[str]]:
    """The run's objective without its networks, or None and the lines saying why it cannot be built: its
    options against their declaration, then any rule of its constructor that spans several options."""
    problems = option_problems_of(run["objective"])
    if problems:
        return None, problems
    try:
        return describe(run["objective"]), []
    except ValueError as e:
        return None, [str(e)]


def _grid_problems(key: str, ks: list, runs: dict[str, dict]) -> list[str]:
    """One line per (K, step rule) that some stages cannot take (``Objective.fits_steps``); the schema has
    checked that K >= 1."""
    objectives = {name: _described(run)[0] for name, run in runs.items()}
    bad: dict[tuple, list[str]] = {}
    for k in ks:
        for name, objective in objectives.items():
            if objective is not None and not objective.fits_steps(k):
                bad.setdefault((k, objective.steps_rule()), []).append(name)
    return [
        f"{key}: K = {k!r} does not fit the step grid of stage(s) {names}: {rule}" for (k, rule), names in bad.items()
    ]


def experiment_runs(cfg: dict) -> dict[str, dict]:
    """Every training run of an experiment (``f2d2.config.experiment.runs``) -> its config, overrides applied
    (an ablation's train.* values are resolved by ``check_experiment``). Stages keep their names; an ablation
    run is named for the messages as ``ablations.<name> value <value>``."""
    stages = cfg.get("stages") or {}
    labels = {
        run: f"ablations.{name} value {value!r}"
        for name in cfg.get("ablations") or {}
        for value, run in experiment.ablation_runs(cfg, name)
        if run not in stages
    }
    return {
        labels.get(run, run): apply_overrides(resolve_run(cfg, stage), overrides)
        for run, (stage, overrides) in experiment.runs(cfg).items()
    }


def _resource_problems(cfg: dict, runs: dict[str, dict]) -> list[str]:
    """Resources a job cannot get or use: GPUs this machine lacks, a batch the GPUs cannot split."""
    problems = []
    cluster = cfg.get("cluster", DEFAULT_CLUSTER)
    for kind, res in (cfg.get("resources") or {}).items():
        key = f"resources.{kind}"
        r = Resources(**res)
        if r.gpus > 0 and r.tasks_per_node not in (1, r.gpus):
            problems.append(
                f"{key}.tasks_per_node = {r.tasks_per_node} with {key}.gpus = {r.gpus}; expected 1 "
                f"(one process for all GPUs) or {r.gpus} (one process per GPU)"
            )
        if r.gpus > 0 and cluster in ("local", "inline"):
            have = torch.cuda.device_count()
            if have < r.gpus:
                problems.append(
                    f"{key}.gpus = {r.gpus} with cluster = {cluster!r}, but this machine has {have} "
                    f"CUDA device(s); lower {key}.gpus or run on SLURM (cluster: slurm)"
                )
        split = max(r.gpus, r.tasks_per_node)  # processes (or GPUs) that share each batch
        if kind == "train" and split > 1:
            what = f"{key}.gpus = {r.gpus}" if r.gpus >= r.tasks_per_node else f"{key}.tasks_per_node = {split}"
            batches: dict[int, list[str]] = {}
            for run_name, run in runs.items():
                if run["train"]["batch_size"] % split:
                    batches.setdefault(run["train"]["batch_size"], []).append(_where(run_name, runs))
            problems += [
                f"train.batch_size = {batch} (in {', '.join(names)}) is not divisible by {what}; "
                f"use a multiple of {split}"
                for batch, names in batches.items()
            ]
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
    problems = [
        f"{p} (in {'every run' if len(names) == len(runs) > 1 else ', '.join(names)})" for p, names in where.items()
    ]

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
    try:
        experiment.reference_stage(cfg)
    except ConfigError as e:
        problems.append(str(e))
    ev = cfg.get("eval") or {}
    quality, fid = ev.get("quality") or {}, ev.get("fid") or {}
    if quality and quality.get("extractor") is None and "extractor" in fid and fid["extractor"] is None:
        problems.append("eval.quality.extractor and eval.fid.extractor are both null: name the FID network")
    sweep = quality.get("sweep") or {}
    if sweep and sweep["run"] not in (f2d2 := experiment.f2d2_stages(cfg)):
        problems.append(f"eval.quality.sweep.run = {sweep['run']!r} is not an F2D2 stage; F2D2 stages: {f2d2}")
    problems += _resource_problems(cfg, runs)
    validate.raise_problems(problems)
