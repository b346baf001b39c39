"""What every objective is: ``objective(model, x1, generator) -> {"loss": ..., term: ...}``, and how it
declares itself.

x1 is a data batch (B, *shape) at t = 1 (t = 0 is noise). An objective states, once and beside its code:

- ``OPTIONS``: its config keys (:class:`f2d2.config.options.Option`: default, allowed values, meaning); the
  constructor takes exactly these as keywords (plus the frozen networks of ``NETWORKS``), checks them
  (ValueError naming the key, the value and what is allowed) and sets each as an attribute. The config
  checks, the resolved run config (every default filled in), the fingerprint and Table 3 read them.
- ``TERMS``: the loss terms it may log besides ``loss``; ``DIVERGENCE_TERMS``: those that regress the
  divergence head (the failure checks watch them).
- its capabilities, from its options: ``needs_teacher``, ``needs_start``, ``trains_div_head``,
  ``flow_map``, ``uses_jvp`` and the step counts it trains (``fits_steps``).

The properties depend on the options only, so an objective built without its networks
(``f2d2.objectives.describe``) answers them for the config checks and the training loop.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from f2d2.config.options import Option, option_problems, resolve_options
from f2d2.data import jitter
from f2d2.objectives import teacher_path as tp

F2D2_OPTIONS = (
    Option("f2d2", False, {"type": "boolean"}, "train the divergence head D as well (the F2D2 variant)"),
    Option(
        "div_source",
        "teacher",
        {"enum": ["self", "teacher"]},
        "whose velocity's divergence D learns: the model's own or the teacher's",
        only={"f2d2": True},
    ),
    Option(
        "div_method",
        "exact",
        {"enum": ["exact", "hutchinson"]},
        "the divergence target: exact (autograd, d passes) or one Hutchinson probe",
        only={"f2d2": True},
    ),
    Option(
        "lam", 1.0, {"type": "number", "minimum": 0}, "the weight lambda of the divergence terms", only={"f2d2": True}
    ),
    tp.OPTION,
)


class ObjectiveError(ValueError):
    """Options an objective cannot take; the message names each key, its value and what is allowed."""


class Objective:
    """Defaults: a flow map (u(x, s, t) for s != t) without options, networks or a divergence head."""

    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    NETWORKS: ClassVar[tuple[str, ...]] = ()  # frozen networks the constructor takes: "teacher", "start"
    TERMS: ClassVar[tuple[str, ...]] = ()
    DIVERGENCE_TERMS: ClassVar[tuple[str, ...]] = ()
    flow_map = True  # trains u(x, s, t) off the diagonal; False: only the velocity v(x, t) = u(x, t, t)

    def __init__(self, **options: Any):
        networks = {k: options.pop(k) for k in self.NETWORKS if k in options}
        problems = self.option_problems(options, "objective", f"objective {type(self).__name__}")
        if problems:
            raise ObjectiveError("; ".join(problems))
        values = resolve_options(self.OPTIONS, options)
        for key, value in {**values, **networks}.items():
            setattr(self, key, value)
        for key in self.NETWORKS:
            setattr(self, key, networks.get(key))
        self.options = {o.name: values[o.name] for o in self.OPTIONS if o.applies(values)}
        self.check()
        if self.needs_path and self.div_source != "teacher":
            raise ObjectiveError(
                f"objective.teacher_path gives the head the teacher's divergence, but objective.div_source = "
                f"{self.div_source!r}; set div_source: teacher or teacher_path: null"
            )
        if self.needs_path and (settings := self.teacher_path.get("jitter")):
            if problems := jitter.problems(settings, "objective.teacher_path.jitter"):
                raise ObjectiveError("; ".join(problems))

    @classmethod
    def option_problems(cls, values: dict, where: str, what: str) -> list[str]:
        """One line per key of ``values`` that is unknown, renamed, out of range or does not apply given the
        other options (``Option.only``)."""
        problems = option_problems(cls.OPTIONS, values, where, what)
        filled = resolve_options(cls.OPTIONS, values)
        for o in cls.OPTIONS:
            if o.name in values and not o.applies(filled):
                needs = ", ".join(f"{k} = {v!r}" for k, v in o.only.items())
                problems.append(f"{where}.{o.name} applies only with {needs}")
        return problems

    def check(self) -> None:
        """Rules that span several options; raises ObjectiveError naming the keys and values."""

    path: tp.TeacherPath | None = None  # with objective.teacher_path: the run's path (set by the training loop)

    def with_path_term(self, loss: torch.Tensor, terms: dict, model, generator: torch.Generator) -> torch.Tensor:
        """``loss`` plus lam * weight * L_path (``terms["path"]``) with objective.teacher_path set, else ``loss``."""
        if not self.needs_path:
            return loss
        if self.path is None:
            raise ValueError(
                "objective.teacher_path is set but the objective has no TeacherPath; give it the run's "
                "(f2d2.training.path_cache.prepare) as objective.path"
            )
        options = self.teacher_path
        terms["path"] = tp.path_loss(model, self.path, options["rows"], generator, backward=self.two_way)
        return loss + self.lam * options["weight"] * terms["path"]

    @property
    def needs_path(self) -> bool:
        """Trains on the teacher's path (objective.teacher_path): the loop prepares it before the first step."""
        return getattr(self, "teacher_path", None) is not None

    needs_teacher = False  # reads a frozen flow-matching teacher (the network objective.teacher names)
    needs_start = False  # reads a frozen copy of the network the run warm-starts from (train.init_from)
    uses_jvp = False  # calls the network inside torch.func.jvp (no torch.compile for it)

    @property
    def trains_div_head(self) -> bool:
        """Regresses the divergence head D (the model needs model.div_head: true)."""
        return bool(getattr(self, "f2d2", False))

    @property
    def own_divergence(self) -> bool:
        """Its head learns the divergence of its own velocity (``div_source: self``), not the teacher's."""
        return self.trains_div_head and self.div_source == "self"

    def fits_steps(self, k: int) -> bool:
        """Whether K >= 1 uniform steps of size 1/K are among the step sizes the objective trains."""
        return True

    def steps_rule(self) -> str:
        """What ``fits_steps`` allows, for messages."""
        return "any K >= 1"
