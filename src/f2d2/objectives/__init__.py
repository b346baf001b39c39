"""Training objectives. Each is a callable ``objective(model, x1, generator) -> dict``.

The dict maps term names to scalar tensors and always holds ``"loss"``, the total
that is minimised; the other entries are logged. ``x1`` is a data batch (B, *shape);
all randomness (noise x0, times, probes) is drawn from ``generator``.
"""

from __future__ import annotations

from typing import Callable

from .flow_matching import FlowMatching

OBJECTIVES: dict[str, Callable[..., object]] = {"flow_matching": FlowMatching}


def build_objective(cfg: dict):
    """Build an objective from ``{"name": ..., **options}``."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in OBJECTIVES:
        raise ValueError(f"objective.name = {name!r} is unknown; expected one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](**cfg)


__all__ = ["OBJECTIVES", "FlowMatching", "build_objective"]
