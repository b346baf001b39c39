"""Training objectives. Each is a callable ``objective(model, x1, generator) -> dict``.

The dict maps term names to scalar tensors and always holds ``"loss"``, the total
that is minimised; the other entries are logged. ``x1`` is a data batch (B, *shape);
all randomness (noise x0, times, probes) is drawn from ``generator``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

from f2d2.objectives.flow_matching import FlowMatching
from f2d2.objectives.meanflow import MeanFlow
from f2d2.objectives.shortcut import Shortcut

OBJECTIVES: dict[str, Callable[..., object]] = {
    "flow_matching": FlowMatching,
    "shortcut": functools.partial(Shortcut, distill=False, f2d2=False),
    "shortcut_distill": functools.partial(Shortcut, distill=True, f2d2=False),
    "shortcut_f2d2": functools.partial(Shortcut, distill=False, f2d2=True),
    "shortcut_distill_f2d2": functools.partial(Shortcut, distill=True, f2d2=True),
    "meanflow": functools.partial(MeanFlow, f2d2=False),
    "meanflow_f2d2": functools.partial(MeanFlow, f2d2=True),
}


def _parameters(name: str) -> tuple[set[str], set[str]]:
    """(constructor parameters, those the registry fixes) of objective ``name``."""
    build = OBJECTIVES[name]
    if isinstance(build, functools.partial):
        return set(inspect.signature(build.func).parameters), set(build.keywords)
    return set(inspect.signature(build).parameters), set()


def objective_options(name: str) -> set[str]:
    """The config keys objective ``name`` accepts (besides ``name``)."""
    params, fixed = _parameters(name)
    return params - fixed - {"self", "device"}


def build_objective(cfg: dict, device: str = "cpu"):
    """Build an objective from ``{"name": ..., **options}``; unknown names and keys raise ValueError."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in OBJECTIVES:
        raise ValueError(f"objective.name = {name!r} is unknown; expected one of {sorted(OBJECTIVES)}")
    allowed = objective_options(name)
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"objective {name!r} has no option(s) {unknown}; allowed: {sorted(allowed)}")
    if "device" in _parameters(name)[0]:
        cfg["device"] = device
    return OBJECTIVES[name](**cfg)


__all__ = ["OBJECTIVES", "FlowMatching", "MeanFlow", "Shortcut", "build_objective"]
