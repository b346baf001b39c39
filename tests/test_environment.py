"""environment.yml and pyproject.toml declare the same dependencies."""

from __future__ import annotations

from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _normalise(reqs: list[str]) -> dict[str, str]:
    out = {}
    for text in reqs:
        r = Requirement(text)
        out[r.name.lower().replace("_", "-")] = str(r.specifier)
    return out


def test_environment_pip_section_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    pip = [p for p in pip_sections[0] if not p.startswith("-e")]
    assert _normalise(pip) == _normalise(declared)
    assert "-e ." in pip_sections[0]  # the project itself is installed
    assert "python=3.11" in env["dependencies"]
