"""The config options of a registry entry (a class or function, or a ``functools.partial`` of one).

The data and network registries map a config name to a constructor (``DATASETS``, ``ARCHITECTURES``); a
config section's other keys are the constructor's keyword arguments, and this is the one place that reads
them off the signature. (Objectives declare their options instead: ``f2d2.config.options``.)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

REQUIRED = inspect.Parameter.empty  # the default of an option without one


def options_of(build: Callable) -> dict[str, Any]:
    """{option: default (REQUIRED if none)} of ``build``; keywords a partial fixes are not options."""
    fixed = set(build.keywords) if isinstance(build, functools.partial) else set()
    params = inspect.signature(build.func if isinstance(build, functools.partial) else build).parameters
    return {k: p.default for k, p in params.items() if k not in fixed and k != "self"}
