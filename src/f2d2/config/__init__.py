"""Experiment configs, torch-free: the schema of every key (``schema``, ``validate``), declared options
(``options``), read, merge and resolve (``resolve``), job resources (``resources``), the experiment's runs
(``experiment``) and its evaluation cells (``cells``). The checks that need the registries (and so torch)
are ``f2d2.preflight``."""

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
