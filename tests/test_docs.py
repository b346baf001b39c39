"""The README is what a user needs first, the docs link to what exists, and the configs describe their keys
(measurements live in docs/findings/, each with the command that printed it)."""

from __future__ import annotations

import importlib
import importlib.util
import re

from pipeline_helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
DOTTED = re.compile(r"\bf2d2(?:\.[A-Za-z_][A-Za-z0-9_]*)+(?![<A-Za-z0-9_])")  # cmd_<command>: a pattern


def test_readme_starts_with_the_two_commands_and_stays_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    head = "\n".join(lines[:15])
    assert "bash scripts/run.sh" in head and "bash scripts/test.sh" in head
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_every_relative_link_of_the_docs_exists():
    missing = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert missing == []


def _resolves(name: str) -> bool:
    """Whether a dotted f2d2 name is a module, or an attribute of the longest module prefix."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            if importlib.util.find_spec(module) is None:
                continue
        except ModuleNotFoundError:  # a parent is a module, not a package
            continue
        obj = importlib.import_module(module)
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_f2d2_name_in_the_docs_and_docstrings_exists():
    """nets/unet.py named f2d2.nets.meanflow_ckpt, a module that did not exist."""
    files = DOCS + sorted((ROOT / "src" / "f2d2").rglob("*.py")) + sorted((ROOT / "workflow").rglob("*.smk"))
    stale = sorted(
        {
            f"{f.relative_to(ROOT)}: {name}"
            for f in files
            for name in DOTTED.findall(f.read_text())
            if not _resolves(name)
        }
    )
    assert stale == []


def test_configs_describe_keys_not_measurements():
    """config/config.yaml had 24 comment lines of measurements; they moved to docs/findings/."""
    measured = re.compile(r"#.*\d\.\d{3}")
    found = [
        f"{path.name}:{i}: {line.strip()}"
        for path in sorted((ROOT / "config").glob("*.yaml"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if measured.search(line)
    ]
    assert found == []


def test_the_objective_options_page_is_generated_from_the_declarations():
    """One definition: docs/objective-options.md is `f2d2 objectives`' output, not a second description."""
    from f2d2.objectives import options_reference

    assert (ROOT / "docs" / "objective-options.md").read_text() == options_reference()


def test_every_row_of_the_objective_options_page_has_four_cells():
    """A '|' inside a meaning (|t - s|) is escaped, so no row of the generated tables splits into more cells."""
    import re

    from f2d2.objectives import options_reference

    rows = [line for line in options_reference().splitlines() if line.startswith("| `")]
    assert any("\\|t - s\\|" in row for row in rows)
    assert [row for row in rows if len(re.split(r"(?<!\\)\|", row)) != 6] == []
