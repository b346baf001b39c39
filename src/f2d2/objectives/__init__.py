"""Training objectives. Each is an :class:`Objective`: ``objective(model, x1, generator) -> dict``.

The dict maps term names to scalar tensors and always holds ``"loss"``, the total that is minimised; the
other entries are logged. ``x1`` is a data batch (B, *shape); all randomness (noise x0, times, probes) is
drawn from ``generator``. An objective declares its options, terms and capabilities beside its code
(``f2d2.objectives.base``). ``OBJECTIVES`` names its variants for configs: an :class:`Entry` is a class, the
options its name fixes and the label tables give it. :func:`register` adds one (a user's objective);
:func:`option_problems` checks, :func:`resolve` completes and :func:`describe` builds a config's
``objective`` section (``{"name": ..., "teacher": ..., **options}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from f2d2.config.options import Option, applicable, option_problems
from f2d2.config.validate import describe as describe_values
from f2d2.nets import FlowMapNet
from f2d2.objectives.base import Objective, ObjectiveError
from f2d2.objectives.flow_matching import FlowMatching
from f2d2.objectives.meanflow import MeanFlow
from f2d2.objectives.shortcut import Shortcut


@dataclass(frozen=True)
class Entry:
    """A config name's objective: ``build`` (the class), ``label`` (its name in tables) and ``fixed`` (the
    options the name sets, e.g. ``f2d2: True``; not config keys)."""

    build: type[Objective]
    label: str
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> list[Option]:
        """The options a config may set under this name."""
        return applicable(self.build.OPTIONS, self.fixed)

    @property
    def takes_teacher(self) -> bool:
        return "teacher" in self.build.NETWORKS


OBJECTIVES: dict[str, Entry] = {
    "flow_matching": Entry(FlowMatching, "Flow Matching"),
    "shortcut": Entry(Shortcut, "Shortcut Model", {"distill": False, "f2d2": False}),
    "shortcut_distill": Entry(Shortcut, "Shortcut-Distill", {"distill": True, "f2d2": False}),
    "meanflow": Entry(MeanFlow, "MeanFlow", {"f2d2": False}),
    "shortcut_f2d2": Entry(Shortcut, "Shortcut-F2D2", {"distill": False, "f2d2": True}),
    "shortcut_distill_f2d2": Entry(Shortcut, "Shortcut-Distill-F2D2", {"distill": True, "f2d2": True}),
    "meanflow_f2d2": Entry(MeanFlow, "MeanFlow-F2D2", {"f2d2": True}),
}


def register(name: str, build: type[Objective], label: str, **fixed: Any) -> None:
    """Make ``objective.name: <name>`` build ``build`` (an :class:`Objective` declaring its ``OPTIONS``), with
    the options ``fixed`` set and ``label`` in tables. Refuses a name already taken."""
    if name in OBJECTIVES:
        raise ValueError(f"objective name {name!r} is taken (by {OBJECTIVES[name].build.__name__})")
    if not (isinstance(build, type) and issubclass(build, Objective)):
        raise ValueError(f"objective {name!r}: {build!r} is not an f2d2.objectives.Objective subclass")
    declared = {o.name for o in build.OPTIONS}
    unknown = sorted(set(fixed) - declared)
    if unknown:
        raise ValueError(f"objective {name!r}: {build.__name__} declares no option(s) {unknown} to fix")
    OBJECTIVES[name] = Entry(build, label, dict(fixed))


def entry(cfg: dict) -> Entry:
    """The registry entry of a config's ``objective`` section; ObjectiveError for an unknown name."""
    name = cfg.get("name")
    if name not in OBJECTIVES:
        raise ObjectiveError(f"objective.name = {name!r} is unknown; allowed: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def option_problems_of(cfg: dict) -> list[str]:
    """One line per key of a config's ``objective`` section that its objective cannot take: an unknown name,
    an unknown or renamed key, a value out of range; ``teacher`` only where the objective takes one."""
    try:
        found = entry(cfg)
    except ObjectiveError as e:
        return [str(e)]
    extra = ("name", "teacher") if found.takes_teacher else ("name",)
    options = {k: v for k, v in cfg.items() if k not in extra}
    return option_problems(found.options, options, "objective", f"objective {cfg['name']!r}")


def resolve(cfg: dict) -> dict:
    """A config's ``objective`` section with every option its objective takes (defaults filled in): what a
    run's config.yaml records. The section must be valid (:func:`option_problems_of`)."""
    found = entry(cfg)
    out = {"name": cfg["name"], **({"teacher": cfg["teacher"]} if "teacher" in cfg else {})}
    return {**out, **{k: v for k, v in describe(cfg).options.items() if k not in found.fixed}}


def describe(cfg: dict, teacher: FlowMapNet | None = None, start: FlowMapNet | None = None) -> Objective:
    """The objective of ``{"name": ..., **options}`` with ``teacher`` (default none) in place of the config's
    objective.teacher (a path) and ``start`` the frozen warm-start network (objectives that take one): cheap,
    to ask its properties. Raises ObjectiveError (a ValueError) naming every bad key."""
    found = entry(cfg)
    problems = option_problems_of(cfg)
    if problems:
        raise ObjectiveError("; ".join(problems))
    options = {k: v for k, v in cfg.items() if k not in ("name", "teacher")}
    nets = {k: v for k, v in {"teacher": teacher, "start": start}.items() if k in found.build.NETWORKS}
    return found.build(**options, **found.fixed, **nets)


def options_reference() -> str:
    """Every objective's options as Markdown, read off the declarations: a table per config name with each
    option's default, allowed values and meaning (``f2d2 objectives``; docs/objective-options.md)."""
    lines = ["# Objective options", "", "Generated by `f2d2 objectives` from each objective's `OPTIONS`; do not edit."]
    for name, found in OBJECTIVES.items():
        teacher = " It takes `teacher` (a stage name, a checkpoint or an outside model)." if found.takes_teacher else ""
        lines += ["", f"## `{name}`: {found.label}", "", f"Class `{found.build.__name__}`.{teacher}", ""]
        if not found.options:
            lines.append("No options.")
            continue
        lines += ["| option | default | allowed | meaning |", "|---|---|---|---|"]
        for o in found.options:
            old = f" (formerly `{o.renamed_from}`)" if o.renamed_from else ""
            cells = (describe_values(o.allowed), o.meaning)  # a "|" in a cell (|t - s|) would end it: escaped
            allowed, meaning = (c.replace("|", "\\|") for c in cells)
            lines.append(f"| `{o.name}`{old} | `{o.default!r}` | {allowed} | {meaning} |")
    return "\n".join(lines) + "\n"


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


__all__ = [
    "OBJECTIVES",
    "Entry",
    "FlowMatching",
    "MeanFlow",
    "Objective",
    "ObjectiveError",
    "Shortcut",
    "build_objective",
    "describe",
    "entry",
    "option_problems_of",
    "options_reference",
    "register",
    "resolve",
]
