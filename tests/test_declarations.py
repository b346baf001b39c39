"""An objective declares itself once (its options, terms and capabilities), and everything else derives from
that declaration: the start-up checks, the Python API's checks, the resolved run config and fingerprint, the
failure checks and the semigroup term both Shortcut and MeanFlow train."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
import yaml

import f2d2
from f2d2.config import experiment
from f2d2.config.options import option_problems
from f2d2.config.resolve import ConfigError, resolve_run
from f2d2.objectives import OBJECTIVES, MeanFlow, Shortcut, describe, resolve
from f2d2.objectives.semigroup import SemigroupTerm
from f2d2.preflight.checks import check_experiment
from f2d2.preflight.runs import run_fingerprint
from f2d2.training.loop import prepare_run
from pipeline_helpers import ROOT

BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_declared_default_is_an_allowed_value_with_a_meaning(name):
    options = OBJECTIVES[name].options
    assert option_problems(options, {o.name: o.default for o in options}, "objective", name) == []
    assert all(o.meaning and o.allowed for o in options)
    assert len({o.name for o in options}) == len(options)


@pytest.mark.parametrize(
    "build, options, words",
    [
        (Shortcut, {"f2d2": True, "div_source": "Teacher"}, "div_source = 'Teacher'; expected 'self' or 'teacher'"),
        (MeanFlow, {"tangent": "Teacher"}, "tangent = 'Teacher'; expected 'conditional' or 'teacher'"),
        (Shortcut, {"lam": 0.1}, "objective.lam applies only with f2d2 = True"),
        (MeanFlow, {"semigroup_log2": 2.0}, "semigroup_log2 = 2.0; expected an integer"),
        (Shortcut, {"max_log2": 3}, "max_log2 was renamed objective.semigroup_log2"),
        (MeanFlow, {"tangnet": "teacher"}, "no option(s) ['tangnet']"),
    ],
)
def test_the_python_api_matches_values_exactly(build, options, words):
    """Misspelt values used to fall through silently (Shortcut's div_source 'Teacher' used its own velocity,
    MeanFlow's tangent 'Teacher' the conditional one)."""
    with pytest.raises(ValueError) as err:
        build(**options)
    assert words in str(err.value)


def test_the_start_up_check_reports_what_the_constructor_would_raise():
    cfg = copy.deepcopy(BASE)
    cfg["stages"]["meanflow"]["objective"].update(from_data=0.5, two_way=False)
    with pytest.raises(ConfigError, match="from_data = 0.5 moves steps backward from the data"):
        check_experiment(cfg, data_files=False)


def test_every_default_is_resolved_into_the_run_config_and_its_fingerprint(monkeypatch):
    """The shortcut stage's resolved config was {'name': 'shortcut', 'time_grid': 'dyadic'}: its defaults were
    missing from config.yaml, the checkpoint, Table 3 and the fingerprint."""
    run, _ = prepare_run(resolve_run(BASE, "shortcut"))
    assert run["objective"]["semigroup_log2"] == 7 and run["objective"]["semigroup_fraction"] == 0.25
    assert set(run["objective"]) == {"name"} | {o.name for o in OBJECTIVES["shortcut"].options}
    before = {r: run_fingerprint(BASE, r) for r in experiment.runs(BASE)}
    declared = list(Shortcut.OPTIONS)
    i = next(i for i, o in enumerate(declared) if o.name == "semigroup_fraction")
    declared[i] = type(declared[i])(**{**declared[i].__dict__, "default": 0.5})
    monkeypatch.setattr(Shortcut, "OPTIONS", tuple(declared))
    after = {r: run_fingerprint(BASE, r) for r in experiment.runs(BASE)}
    changed = {r for r in before if before[r] != after[r]}
    sets_it = {r for r in before if "semigroup_fraction" in experiment.run_config(BASE, r)["objective"]}
    shortcuts = {r for r in before if OBJECTIVES[experiment.run_config(BASE, r)["objective"]["name"]].build is Shortcut}
    assert changed == shortcuts - sets_it and "shortcut" in changed and "teacher" not in changed


def test_a_label_or_a_logging_key_changes_no_fingerprint():
    cfg = copy.deepcopy(BASE)
    cfg["stages"]["shortcut"]["label"] = "Mine"
    cfg["stages"]["shortcut"].setdefault("train", {}).update(log_every=7, device="cpu")
    assert run_fingerprint(cfg, "shortcut") == run_fingerprint(BASE, "shortcut")
    run = experiment.run_config(cfg, "shortcut")
    assert experiment.resume_key(run) == experiment.resume_key(experiment.run_config(BASE, "shortcut"))


def test_resolve_keeps_the_name_and_teacher_and_fills_every_option():
    out = resolve({"name": "meanflow_f2d2", "teacher": "teacher", "lam": 0.1})
    assert out["name"] == "meanflow_f2d2" and out["teacher"] == "teacher" and out["lam"] == 0.1
    assert out["semigroup_fraction"] == 0.0 and out["time_grid"] == "dyadic" and "f2d2" not in out
    assert resolve(out) == out  # resolving twice changes nothing


def test_shortcut_and_meanflow_train_one_semigroup_term_with_one_vocabulary():
    """Shortcut._self_consistency and MeanFlow._semigroup were two copies, with options sc_fraction / max_log2
    against semigroup_fraction / semigroup_log2 and terms sc / div_sc against sg / sg_div."""
    assert Shortcut.semigroup_terms is MeanFlow.semigroup_terms is SemigroupTerm.semigroup_terms
    for cls in (Shortcut, MeanFlow):
        names = {o.name for o in cls.OPTIONS}
        assert {"semigroup_fraction", "semigroup_log2", "time_grid", "base_step"} <= names
        assert {"sg", "sg_div"} <= set(cls.TERMS) and "sg_div" in cls.DIVERGENCE_TERMS
    # The same model, batch rows and generator state give the same term from either objective.
    torch.manual_seed(0)
    from test_objectives import _mlp

    model, x1 = _mlp(), torch.randn(64, 2)
    options = {"f2d2": True, "div_source": "self", "semigroup_log2": 3, "time_grid": "dyadic"}
    a = Shortcut(**options, semigroup_fraction=0.5).semigroup_terms(
        model, torch.zeros(8, 2), x1[:8], torch.Generator().manual_seed(1)
    )
    b = MeanFlow(**options, semigroup_fraction=0.5).semigroup_terms(
        model, torch.zeros(8, 2), x1[:8], torch.Generator().manual_seed(1)
    )
    assert a.keys() == b.keys() == {"sg", "sg_div"} and all(torch.equal(a[k], b[k]) for k in a)


def test_described_capabilities_come_from_the_options():
    assert describe({"name": "meanflow"}).uses_jvp and not describe({"name": "shortcut"}).uses_jvp
    assert describe({"name": "shortcut_f2d2", "div_source": "self", "self_source": "start"}).needs_start


def _imports_by_folder() -> dict[str, set[str]]:
    root = Path(f2d2.__file__).parent
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        folder = path.relative_to(root).parts[0] if len(path.relative_to(root).parts) > 1 else None
        if folder is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("f2d2."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("f2d2.")]
            for name in names:
                other = name.split(".")[1]
                if other != folder and (root / other).is_dir():
                    found.setdefault(folder, set()).add(other)
    return found


def test_no_two_folders_of_the_package_import_each_other():
    """config/checks.py sat above training/ while training/ imported config/: the folders hid the layers."""
    found = _imports_by_folder()
    pairs = sorted({tuple(sorted((a, b))) for a, deps in found.items() for b in deps if a in found.get(b, set())})
    assert pairs == []
