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


def describe(cfg: dict, teacher: FlowMapNet | None = None, start: FlowMapNet | None = None) -> Objective:
    """The objective of ``{"name": ..., **options}`` with ``teacher`` (default none) in place of the config's
    objective.teacher (a path) and ``start`` the frozen warm-start network (objectives that take one): cheap,
    to ask its properties. Unknown names and keys raise ValueError."""
    options = dict(cfg)
    name = options.pop("name", None)
    if name not in OBJECTIVES:
        raise ValueError(f"objective.name = {name!r} is unknown; expected one of {sorted(OBJECTIVES)}")
    takes = options_of(OBJECTIVES[name])
    allowed = set(takes) - {"start"}  # a network, not a config value (objective.teacher is a path there)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"objective {name!r} has no option(s) {unknown}; allowed: {sorted(allowed)}")
    options.pop("teacher", None)
    nets = {"teacher": teacher, "start": start}
    return OBJECTIVES[name](**options, **{k: v for k, v in nets.items() if k in takes})


def build_objective(cfg: dict, teacher: FlowMapNet | None = None, start: FlowMapNet | None = None) -> Objective:
    """The objective to train with: ``describe(cfg, teacher, start)``, refused when it needs a teacher or a
    start network and has none.

    ``teacher`` is the frozen network that the config's objective.teacher names, ``start`` a frozen copy of the
    one train.init_from names (the training loop loads both)."""
    objective = describe(cfg, teacher, start)
    if objective.needs_teacher and teacher is None:
        raise ValueError(
            f"objective {cfg.get('name')!r} needs objective.teacher (a flow-matching checkpoint), "
            "but no teacher network was given"
        )
    if objective.needs_start and start is None:
        raise ValueError(
            f"objective {cfg.get('name')!r} with self_source 'start' needs the frozen start network "
            "(train.init_from), but none was given"
        )
    return objective


__all__ = ["OBJECTIVES", "FlowMatching", "MeanFlow", "Objective", "Shortcut", "build_objective", "describe"]
