"""The package's layers: every import points down the list below, never up, so there is no import circle."""

import ast
from pathlib import Path

import f2d2

# Lowest first. A module may import its own layer and those before it.
LAYERS = [
    (
        "f2d2.registry",
        "f2d2.config.schema",
        "f2d2.config.validate",
        "f2d2.config.resolve",
        "f2d2.config.resources",
        "f2d2.config.experiment",
        "f2d2.config.cells",
        "f2d2.config",
    ),  # torch-free: config values, rules
    ("f2d2.nets",),
    ("f2d2.core",),
    ("f2d2.objectives", "f2d2.data"),
    ("f2d2.io",),
    ("f2d2.eval",),
    ("f2d2.training",),
    ("f2d2.preflight",),  # pre-flight checks: rules that need the registries, files and hardware
    ("f2d2.cli", "f2d2.api", "f2d2"),
]


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix naming ``module``'s layer."""
    best = max(
        (prefix for group in LAYERS for prefix in group if module == prefix or module.startswith(prefix + ".")), key=len
    )
    return next(i for i, group in enumerate(LAYERS) if best in group)


def imports(path: Path, module: str) -> set[str]:
    """The f2d2 modules ``path`` imports (absolute or relative), anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("f2d2")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            if base.startswith("f2d2"):  # "from f2d2.config import experiment" imports f2d2.config.experiment
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def test_every_import_points_down_the_layers():
    root = Path(f2d2.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for target in imports(path, module):
            if module != "f2d2" and layer(target) > layer(module):
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_the_layer_map_knows_a_misplaced_import():
    assert layer("f2d2.core.flowmap") < layer("f2d2.training.loop")
    assert layer("f2d2.config.resolve") < layer("f2d2.nets.base") < layer("f2d2.preflight.checks")
