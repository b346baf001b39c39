"""Training objectives. Each is an :class:`Objective`: ``objective(model, x1, generator) -> dict``.

The dict maps term names to scalar tensors and always holds ``"loss"``, the total
that is minimised; the other entries are logged. ``x1`` is a data batch (B, *shape);
all randomness (noise x0, times, probes) is drawn from ``generator``. An objective
describes itself (``needs_teacher``, ``trains_div_head``, ``flow_map``, ``fits_steps``);
``describe(cfg)`` answers for a config without loading a teacher.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from f2d2.nets import FlowMapNet
from f2d2.objectives.base import Objective
from f2d2.objectives.flow_matching import FlowMatching
from f2d2.objectives.meanflow import MeanFlow
from f2d2.objectives.shortcut import Shortcut
from f2d2.registry import options_of

OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "flow_matching": FlowMatching,
    "shortcut": functools.partial(Shortcut, distill=False, f2d2=False),
    "shortcut_distill": functools.partial(Shortcut, distill=True, f2d2=False),
    "shortcut_f2d2": functools.partial(Shortcut, distill=False, f2d2=True),
    "shortcut_distill_f2d2": functools.partial(Shortcut, distill=True, f2d2=True),
    "meanflow": functools.partial(MeanFlow, f2d2=False),
    "meanflow_f2d2": functools.partial(MeanFlow, f2d2=True),
}


def describe(cfg: dict, teacher: FlowMapNet | None = None) -> Objective:
    """The objective of ``{"name": ..., **options}`` with ``teacher`` (default none) in place of the config's
    objective.teacher (a path): cheap, to ask its properties. Unknown names and keys raise ValueError."""
    options = dict(cfg)
    name = options.pop("name", None)
    if name not in OBJECTIVES:
        raise ValueError(f"objective.name = {name!r} is unknown; expected one of {sorted(OBJECTIVES)}")
    allowed = options_of(OBJECTIVES[name])
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"objective {name!r} has no option(s) {unknown}; allowed: {sorted(allowed)}")
    options.pop("teacher", None)
    return OBJECTIVES[name](**options, **({"teacher": teacher} if "teacher" in allowed else {}))


def build_objective(cfg: dict, teacher: FlowMapNet | None = None) -> Objective:
    """The objective to train with: ``describe(cfg, teacher)``, refused when it needs a teacher and has none.

    ``teacher`` is the frozen network that the config's objective.teacher names (the training loop loads it)."""
    objective = describe(cfg, teacher)
    if objective.needs_teacher and teacher is None:
        raise ValueError(
            f"objective {cfg.get('name')!r} needs objective.teacher (a flow-matching checkpoint), "
            "but no teacher network was given"
        )
    return objective


__all__ = ["OBJECTIVES", "FlowMatching", "MeanFlow", "Objective", "Shortcut", "build_objective", "describe"]
