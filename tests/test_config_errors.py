"""Malformed configs are refused at start-up with a message naming the key, the value and what is allowed."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import yaml

from f2d2.cli import main
from f2d2.config.resolve import EARLY_STOP_DEFAULTS, RUN_DEFAULTS, ConfigError, deep_merge, resolve_run
from f2d2.config.resources import RESOURCE_DEFAULTS
from f2d2.config.schema import defaults, section
from f2d2.config.validate import problems, validate_run
from f2d2.data import DATASETS
from f2d2.preflight.checks import ConfigWarning, check_experiment
from pipeline_helpers import ROOT, snakemake, tiny_config, train_default_teacher

BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
DROP = object()


def _set(cfg: dict, path: str, value) -> None:
    node = cfg
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is DROP:
        del node[leaf]
    else:
        node[leaf] = value


# (id, {key path: value}, words the message must hold)
CASES = [
    (
        "unknown objective",
        {"stages.teacher.objective.name": "flow_matchin"},
        ["objective.name = 'flow_matchin' is unknown", "'flow_matching'", "stages.teacher"],
    ),
    ("unknown dataset", {"data.name": "checkers"}, ["data.name = 'checkers' is unknown", "'checkerboard'"]),
    ("unknown arch", {"model.arch": "transformer"}, ["model.arch = 'transformer' is unknown", "'mlp'"]),
    ("unknown objective option", {"stages.shortcut_f2d2.objective.lamda": 1.0}, ["no option(s) ['lamda']", "'lam'"]),
    ("unknown data option", {"data.scales": 2.0}, ["no option(s) ['scales']", "'scale'"]),
    ("unknown model option", {"model.width": 3}, ["no option(s) ['width']", "'hidden'"]),
    (
        "K not a power of two",
        {"eval.steps": [1, 3]},
        ["eval.steps: K = 3 does not fit", "'shortcut'", "power of two <= 128"],
    ),
    ("K beyond the grid", {"eval.steps": [256]}, ["K = 256", "power of two <= 128"]),
    (
        "K beyond a small grid",
        {"stages.shortcut.objective.semigroup_log2": 2},
        ["K = 8", "['shortcut']", "semigroup_log2 = 2", "power of two <= 4"],
    ),
    ("K zero", {"eval.steps": [0, 1]}, ["eval.steps[0] = 0", "integer >= 1"]),
    ("density K off the grid", {"figures.density.steps": 3}, ["figures.density.steps: K = 3", "power of two"]),
    ("c zero", {"stages.shortcut_f2d2.model.div_scale": 0}, ["model.div_scale = 0", "> 0", "stages.shortcut_f2d2"]),
    ("c negative", {"stages.meanflow_f2d2.model.div_scale": -2.5}, ["model.div_scale = -2.5", "stages.meanflow_f2d2"]),
    (
        "c negative in an ablation",
        {"ablations.div_scale.values": [1.0, -1.0]},
        ["model.div_scale = -1.0", "ablations.div_scale value -1.0"],
    ),
    ("lambda negative", {"stages.shortcut_f2d2.objective.lam": -0.5}, ["objective.lam = -0.5", ">= 0"]),
    (
        "lambda negative in an ablation",
        {"ablations.lam.values": [-1.0]},
        ["objective.lam = -1.0", "ablations.lam value -1.0"],
    ),
    (
        "semigroup_fraction one",
        {"stages.shortcut.objective.semigroup_fraction": 1.0},
        ["objective.semigroup_fraction = 1.0", "(0, 1)"],
    ),
    ("map_fraction zero", {"stages.meanflow.objective.map_fraction": 0}, ["objective.map_fraction = 0", "(0, 1]"]),
    (
        "semigroup_log2 negative",
        {"stages.shortcut.objective.semigroup_log2": -1},
        ["objective.semigroup_log2 = -1", "integer"],
    ),
    (
        "div_source unknown",
        {"stages.shortcut_f2d2.objective.div_source": "both"},
        ["objective.div_source = 'both'", "'self' or 'teacher'"],
    ),
    (
        "div_method unknown",
        {"stages.shortcut_f2d2.objective.div_method": "hutch"},
        ["objective.div_method = 'hutch'", "'hutchinson'"],
    ),
    (
        "two_way not a bool",
        {"stages.meanflow.objective.two_way": "yes"},
        ["objective.two_way = 'yes'", "true or false"],
    ),
    (
        "distill without teacher",
        {"stages.shortcut_distill.objective.teacher": DROP},
        ["objective.teacher = None", "'shortcut_distill' needs a teacher", "stages.shortcut_distill"],
    ),
    (
        "teacher neither stage nor file",
        {"stages.shortcut_distill.objective.teacher": "runs/none.pt"},
        ["objective.teacher = 'runs/none.pt' is not a stage name", "existing checkpoint file"],
    ),
    (
        "init_from neither stage nor file",
        {"stages.shortcut.train.init_from": "techer"},
        ["train.init_from = 'techer' is not a stage name", "'teacher'"],
    ),
    (
        "F2D2 without divergence head",
        {"stages.shortcut_f2d2.model.div_head": False},
        ["model.div_head = False", "set model.div_head: true"],
    ),
    (
        "early stop without divergence head",
        {"stages.teacher.train.early_stop": {"target_bpd": 3.0}},
        ["train.early_stop measures the F2D2 likelihood", "model.div_head = None", "stages.teacher"],
    ),
    (
        "early stop at the teacher's BPD without a teacher",
        {"stages.shortcut_f2d2.train.early_stop": {}},
        ["train.early_stop.target_bpd = None", "objective.teacher = None", "stages.shortcut_f2d2"],
    ),
    (
        "early stop tol zero",
        {"stages.shortcut_distill_f2d2.train.early_stop": {"tol": 0}},
        ["train.early_stop.tol = 0", "> 0"],
    ),
    (
        "points file missing",
        {"data": {"name": "points", "path": "no/such/points.npy"}},
        ["data.path = 'no/such/points.npy' is not an existing file"],
    ),
    ("points without a path", {"data": {"name": "points"}}, ["data 'points' needs data.path"]),
    ("hidden zero", {"model.hidden": 0}, ["model.hidden = 0", "integer >= 1"]),
    ("seed negative", {"seed": -1}, ["seed = -1", "integer >= 0"]),
    ("lr negative", {"train.lr": -0.001}, ["train.lr = -0.001", "> 0"]),
    ("batch zero", {"stages.teacher.train.batch_size": 0}, ["train.batch_size = 0", "integer >= 1"]),
    ("ema_decay one", {"train.ema_decay": 1.0}, ["train.ema_decay = 1.0", "[0, 1)"]),
    ("unknown train key", {"train.epochs": 3}, ["train.epochs is an unknown key", "'steps'"]),
    ("unknown stage key", {"stages.teacher.optim": {}}, ["stages.teacher.optim is an unknown key"]),
    ("unknown top-level key", {"epochs": 3}, ["epochs is an unknown top-level key"]),
    ("ablation of no stage", {"ablations.lam.stage": "nostage"}, ["ablations.lam.stage = 'nostage' is not a stage"]),
    (
        "ablation baseline of no stage",
        {"ablations.lam.baselines": ["ghost"]},
        ["ablations.lam.baselines: 'ghost' is not a stage"],
    ),
    (
        "density run of no stage",
        {"figures.density.runs": ["teacher", "ghost"]},
        ["figures.density.runs: ['ghost'] are not stages"],
    ),
    (
        "batch not divisible by GPUs",
        {"cluster": "slurm", "resources.train.gpus": 3},
        ["train.batch_size = 1024", "not divisible by resources.train.gpus = 3", "multiple of 3"],
    ),
    (
        "frozen own velocity without a warm start",
        {"stages.shortcut_f2d2.objective.self_source": "start", "stages.shortcut_f2d2.train.init_from": None},
        ["objective.self_source = 'start', but train.init_from = None", "stages.shortcut_f2d2"],
    ),
    ("unknown own-velocity source", {"stages.shortcut_f2d2.objective.self_source": "ema"}, ["'ema'", "live"]),
    ("negative memory", {"resources.eval.mem_gb": -4}, ["resources.eval.mem_gb = -4", "> 0"]),
    ("zero time", {"resources.train.time_min": 0}, ["resources.train.time_min = 0", ">= 1"]),
    ("zero cpus", {"resources.eval.cpus": 0}, ["resources.eval.cpus = 0", ">= 1"]),
    (
        "warm-up longer than the stage",
        {"stages.shortcut_f2d2.train.warmup": 1000, "stages.shortcut_f2d2.train.steps": 800},
        [
            "train.warmup = 1000 is longer than train.steps = 800",
            "never exceeds 80% of train.lr",
            "stages.shortcut_f2d2",
        ],
    ),
    (
        "EMA keeps the warm start",
        {"stages.shortcut_f2d2.train.ema_decay": 0.9999, "stages.shortcut_f2d2.train.steps": 800},
        [
            "train.ema_decay = 0.9999 keeps 92.3% of the warm start (train.init_from = 'shortcut')",
            "train.steps = 800",
            "expected <= 5%",
            "train.ema_decay <= 0.99626",
            "train.ema_halflife_steps <= 185",
            "stages.shortcut_f2d2",
        ],
    ),
    (
        "EMA half-life too long",
        {"stages.meanflow_f2d2.train.ema_halflife_steps": 400, "stages.meanflow_f2d2.train.steps": 800},
        ["train.ema_halflife_steps = 400 keeps 25.0% of the warm start", "stages.meanflow_f2d2"],
    ),
    (
        "EMA ramp-up without a half-life",
        {"train.ema_rampup": 0.05},
        ["train.ema_rampup = 0.05 ramps up train.ema_halflife_steps = None"],
    ),
    ("EMA half-life zero", {"train.ema_halflife_steps": 0}, ["train.ema_halflife_steps = 0", "> 0"]),
    (
        "from_data without two_way (a constructor rule)",
        {"stages.meanflow.objective.from_data": 0.5, "stages.meanflow.objective.two_way": False},
        ["objective.from_data = 0.5 moves steps backward from the data; it needs two_way: true", "stages.meanflow"],
    ),
    (
        "self_source on a distilled Shortcut",
        {"stages.shortcut_distill.objective.self_source": "start"},
        ["objective 'shortcut_distill' has no option(s) ['self_source']", "stages.shortcut_distill"],
    ),
    (
        "an old option name",
        {"stages.shortcut.objective.sc_fraction": 0.5},
        ["objective.sc_fraction was renamed objective.semigroup_fraction", "stages.shortcut"],
    ),
    (
        "no FID network for the sample-quality job",
        {"eval.fid": {"extractor": None}, "eval.quality": {"n": 100}},
        ["eval.quality.extractor and eval.fid.extractor are both null"],
    ),
    (
        "tasks per node vs GPUs",
        {"cluster": "slurm", "resources.train.gpus": 2, "resources.train.tasks_per_node": 3},
        ["resources.train.tasks_per_node = 3", "resources.train.gpus = 2", "expected 1", "or 2"],
    ),
]


@pytest.mark.parametrize("changes, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_config_is_refused_naming_key_and_value(changes, words):
    cfg = copy.deepcopy(BASE)
    for path, value in changes.items():
        _set(cfg, path, value)
    with pytest.raises(ConfigError) as err:
        check_experiment(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_cases_are_distinct_and_many():
    assert len({repr(c[1]) for c in CASES}) == len(CASES) >= 30


def _preset(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


@pytest.mark.filterwarnings("ignore:.*keeps 13.5% of the warm start")  # checkerboard.yaml: see the next tests
def test_shipped_configs_pass():
    for name in ("config.yaml", "checkerboard.yaml"):
        check_experiment(_preset(name))
    for path in sorted((ROOT / "config").glob("*.yaml")):  # the image presets' data is elsewhere
        cfg = _preset(path.name)
        if any(res["gpus"] for res in cfg["resources"].values()):  # this machine has no GPU: judged as on SLURM
            cfg["cluster"] = "slurm"
        check_experiment(cfg, data_files=False)


def test_default_config_passes_the_stage_schedule_check_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_experiment(_preset("config.yaml"))


def test_warm_starts_without_a_divergence_head_are_warned_about():
    """checkerboard.yaml's flow maps with an EMA decay of 0.999 keep 0.999^1999 = 13.5% of the teacher: a
    warning, not an error."""
    cfg = _preset("checkerboard.yaml")
    cfg["train"]["ema_decay"] = 0.999
    with pytest.warns(ConfigWarning) as said:
        check_experiment(cfg)
    lines = sorted({str(w.message) for w in said})
    assert len(lines) == 3 and all(
        "train.ema_decay = 0.999 keeps 13.5% of the warm start (train.init_from = "
        "'teacher') in the EMA at train.steps = 2000" in line
        for line in lines
    ), lines
    assert [line.split(":")[0] for line in lines] == [
        "objective 'meanflow'",
        "objective 'shortcut'",
        "objective 'shortcut_distill'",
    ]


# The F2D2 stages' keys config/cifar10.yaml sets to fit their 10000 steps; without them the stages inherit the
# teacher's warm-up (30000 steps) and EMA decay (0.9999).
STAGE_FIT = ("warmup", "ema_halflife_steps", "ema_rampup")
F2D2_STAGES = ("shortcut_f2d2", "shortcut_distill_f2d2", "meanflow_f2d2")


def test_cifar10_f2d2_stages_that_inherit_the_teacher_schedule_are_refused():
    cfg = _preset("cifar10.yaml")
    for stage in F2D2_STAGES:
        for key in STAGE_FIT:
            del cfg["stages"][stage]["train"][key]
    with pytest.raises(ConfigError) as err, pytest.warns(ConfigWarning, match="early_stop.every = 500"):
        check_experiment(cfg, data_files=False)
    lines = str(err.value).splitlines()[1:]
    assert len(lines) == 4, lines
    assert lines[0].startswith(
        "  - train.warmup = 30000 is longer than train.steps = 10000: the learning rate never "
        "exceeds 33% of train.lr = 0.0001"
    )
    for stage, line in zip(F2D2_STAGES, lines[1:]):
        assert line.startswith(
            f"  - train.ema_decay = 0.9999 keeps 36.8% of the warm start (train.init_from = "
            f"'{stage.removesuffix('_f2d2')}') in the EMA at train.steps = 10000; expected <= 5%"
        )
        assert "train.ema_decay <= 0.9997" in line and "train.ema_halflife_steps <= 2314" in line, line
        assert f"(in stages.{stage}" in line, line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_experiment(_preset("cifar10.yaml"), data_files=False)  # the preset as shipped


def test_early_stop_checks_warn_when_the_ema_is_mostly_the_warm_start():
    cfg = _preset("cifar10.yaml")
    cfg["stages"]["meanflow_f2d2"]["train"]["ema_rampup"] = None  # half-life 2000 steps from the start
    with pytest.warns(ConfigWarning) as said:
        check_experiment(cfg, data_files=False)  # at train.steps it keeps 3.1%: no error
    assert [str(w.message) for w in said] == [
        "objective 'meanflow_f2d2': train.ema_halflife_steps = 2000 keeps 84.1% of the warm start (train.init_from "
        "= 'meanflow') in the EMA at train.early_stop.every = 500; expected <= 5%: set train.ema_halflife_steps <= "
        "115 or train.ema_rampup (e.g. 0.05), where train.early_stop may end the run"
    ]


def test_schema_defaults_are_valid_values():
    assert problems(RUN_DEFAULTS, "run") == [] and problems(RESOURCE_DEFAULTS, "resources") == []
    assert problems(EARLY_STOP_DEFAULTS, "early_stop") == []
    assert problems({**BASE, "eval": deep_merge(defaults(section("eval")), BASE["eval"])}) == []


# A new user's first config: three lines of their own.
USER_CONFIG = {"data": {"name": "checkerboard"}, "stages": {"teacher": {"objective": {"name": "flow_matching"}}}}
MISSING = ["experiment", "outdir", "seed", "model", "train", "eval", "resources"]
SCHEMA_WORDS = ["$schema", "additionalProperties", "definitions", "'properties'", "exclusiveMinimum"]


def _assert_missing_keys_listed(said: str) -> None:
    for key in MISSING:
        assert f"  - {key} is missing; expected " in said, (key, said)
    assert not any(word in said for word in SCHEMA_WORDS), said


def test_missing_keys_one_line_each():
    with pytest.raises(ConfigError) as err:
        check_experiment(USER_CONFIG)
    lines = str(err.value).splitlines()
    _assert_missing_keys_listed(str(err.value))
    assert lines[0] == "invalid config:" and len(lines) == 1 + len(MISSING), lines


def test_snakemake_names_missing_keys_without_the_schema(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump(USER_CONFIG))
    proc = snakemake(tmp_path, config, "-n", check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0
    _assert_missing_keys_listed(said)
    assert len(said.splitlines()) < 15, said


def test_a_run_lists_every_bad_key():
    run = resolve_run(BASE, "teacher")
    run["train"]["lr"], run["model"]["depth"] = 0, 0
    with pytest.raises(ConfigError) as err:
        validate_run(run)
    assert str(err.value).splitlines() == [
        "invalid config:",
        "  - model.depth = 0; expected an integer >= 1",
        "  - train.lr = 0; expected a number > 0",
    ]


def test_bad_resources_same_phrase_from_config_and_submit(tmp_path, capsys):
    cfg = copy.deepcopy(BASE)
    cfg["resources"]["eval"]["cpus"] = 0
    with pytest.raises(ConfigError) as err:
        check_experiment(cfg)
    phrase = "cpus = 0; expected an integer >= 1 (CPUs per task)"
    assert f"resources.eval.{phrase}" in str(err.value)
    code = main(["submit", "--cluster", "inline", "--cpus", "0", "--log-dir", str(tmp_path), "--", "data"])
    assert code == 2 and phrase in capsys.readouterr().err


def test_missing_dataset_root_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(DATASETS, "images", lambda root: None)  # a dataset read from a folder
    cfg = copy.deepcopy(BASE)
    cfg["data"] = {"name": "images", "root": str(tmp_path / "absent")}
    with pytest.raises(ConfigError, match=r"data.root = '.*absent' is not an existing folder"):
        check_experiment(cfg)
    (tmp_path / "absent").mkdir()
    check_experiment(cfg)


def test_gpus_on_a_local_machine_without_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cfg = copy.deepcopy(BASE)
    cfg["resources"]["train"]["gpus"] = 1
    with pytest.raises(ConfigError) as err:
        check_experiment(cfg)
    assert "resources.train.gpus = 1 with cluster = 'local', but this machine has 0 CUDA device(s)" in str(err.value)
    cfg["cluster"] = "slurm"  # SLURM nodes have them
    check_experiment(cfg)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["objective.name=bogus"], ["objective.name = 'bogus' is unknown"]),
        (["data.name=points", "data.path=missing.npy"], ["data.path = 'missing.npy' is not an existing file"]),
        (["model.div_scale=-1"], ["model.div_scale = -1"]),
    ],
)
def test_train_cli_refuses_before_training(overrides, words, tmp_path, capsys):
    code = train_default_teacher(tmp_path / "w", *overrides)
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words), err
    assert not (tmp_path / "w").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_cli_refuses_a_missing_cuda_device(tmp_path, capsys):
    code = train_default_teacher(tmp_path / "w", "train.device=cuda")
    assert code == 2 and "train.device = 'cuda', but this machine has no CUDA device" in capsys.readouterr().err


def test_snakemake_stops_before_any_job(tmp_path):
    """A real run (not a dry run) with two semantic errors: both are named and no job starts."""
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["eval"]["steps"] = [1, 3]
    cfg["stages"]["shortcut_distill"]["objective"]["teacher"] = "runs/none.pt"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(tmp_path, config, check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "eval.steps: K = 3 does not fit" in said and "power of two" in said
    assert "objective.teacher = 'runs/none.pt' is not a stage name" in said
    assert not (tmp_path / "results").exists()
