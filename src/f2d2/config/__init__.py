"""Experiment configs: the schema of every key (``schema``, ``validate``), read, merge and resolve
(``resolve``), job resources (``resources``) and the checks that span several keys (``checks``, which loads
the registries and so torch). Torch-free here."""

from f2d2.config.resolve import ConfigError, apply_overrides, deep_merge, load_yaml, resolve_run, stage_dependencies
from f2d2.config.validate import validate_experiment, validate_run

__all__ = [
    "ConfigError",
    "apply_overrides",
    "deep_merge",
    "load_yaml",
    "resolve_run",
    "stage_dependencies",
    "validate_experiment",
    "validate_run",
]
