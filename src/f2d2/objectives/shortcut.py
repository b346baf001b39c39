"""Shortcut models (semigroup self-consistency) and their F2D2 variants.

One batch of data x1 (B, *shape) is split: a share ``semigroup_fraction`` trains the semigroup term
(``f2d2.objectives.semigroup``: dyadic steps d in {1, 1/2, ..., 2^-semigroup_log2}), the rest the tangent
condition at s = t. With m = (s + t) / 2 and x = I_s:

    L_tangent = || u(I_t, t, t) - target ||^2       target = x1 - x0, teacher v (distill) or v_start
    L_SG      = || u(x, s, t) - sg((u(x, s, m) + u(X_{s,m}(x), m, t)) / 2) ||^2
    L_div     = || D(I_t, t, t) - sg(div v(I_t, t)) / c ||^2                    (F2D2)
    L_SG-div  = || D(x, s, t) - sg((D(x, s, m) + D(X_{s,m}(x), m, t)) / 2) ||^2   (F2D2)
    L = L_tangent + L_SG + lambda (L_div + L_SG-div)   (+ lambda w L_path, f2d2.objectives.teacher_path)

``self_source`` says where Shortcut(-F2D2)'s own velocity comes from: ``live``, the network in training
(the paper: the tangent target is x1 - x0 and, with ``div_source: self``, the divergence is that of
u(x, t, t)), or ``start``, a frozen copy ``start`` of the network the run warm-starts from (train.init_from):
the tangent target is then sg(v_start(I_t, t)) and the divergence that of v_start, so the finetuning learns
the likelihood of the Shortcut model it was given, still without a teacher (findings: docs/findings/).
"""

from __future__ import annotations

import torch

from f2d2.config.options import Option
from f2d2.nets import FlowMapNet
from f2d2.objectives import semigroup
from f2d2.objectives.base import F2D2_OPTIONS, Objective
from f2d2.objectives.interpolant import STEP_OPTIONS, check_from_data, interpolate, noise_like, uniform_time
from f2d2.objectives.targets import divergence_target, velocity_target


class Shortcut(semigroup.SemigroupTerm, Objective):
    """Shortcut, Shortcut-Distill and their F2D2 variants (``f2d2=True``); ``teacher`` a frozen network,
    ``start`` the frozen network the run warm-starts from (``self_source: start``)."""

    OPTIONS = (
        Option(
            "distill", False, {"type": "boolean"}, "the tangent target is the teacher's velocity (Shortcut-Distill)"
        ),
        *F2D2_OPTIONS,
        *semigroup.semigroup_options(
            fraction=0.25,
            log2=7,
            grid="continuous",
            fraction_allowed={"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        ),
        *STEP_OPTIONS,
        Option(
            "self_source",
            "live",
            {"enum": ["live", "start"]},
            "the model's own velocity: the network in training, or its frozen warm start (train.init_from)",
            only={"distill": False},
        ),
    )
    NETWORKS = ("teacher", "start")
    TERMS = ("tangent", *semigroup.TERMS, "div", "path")
    DIVERGENCE_TERMS = ("div", "sg_div", "path")

    def check(self) -> None:
        check_from_data(self.from_data, self.two_way)

    @property
    def needs_teacher(self) -> bool:
        return self.distill or (self.f2d2 and self.div_source == "teacher")

    @property
    def needs_start(self) -> bool:
        return self.self_source == "start"

    def _own(self, model: FlowMapNet) -> FlowMapNet:
        """Where the model's own velocity comes from: the network in training, or its frozen start."""
        if self.self_source == "live":
            return model
        if self.start is None:
            raise ValueError("objective.self_source = 'start' needs the frozen start network (train.init_from)")
        return self.start

    def velocity_source(self, model: FlowMapNet) -> FlowMapNet:
        """Where the divergence targets (F2D2; without a head, the tangent's) and the ``ode`` base step's velocity
        come from: the teacher, or the model's own velocity (``self_source``)."""
        teacher = (self.div_source == "teacher") if self.f2d2 else self.distill
        return self.teacher if teacher else self._own(model)

    def fits_steps(self, k: int) -> bool:
        """K a power of two <= 2^semigroup_log2: the dyadic step sizes 2^-j, j = 0..semigroup_log2, of the term."""
        return k >= 1 and k & (k - 1) == 0 and k <= 2**self.semigroup_log2

    def steps_rule(self) -> str:
        m = self.semigroup_log2
        return (
            f"a Shortcut model with objective.semigroup_log2 = {m} is trained on step sizes 2^-j, j = 0..{m}, so K "
            f"must be a power of two <= {2**m}"
        )

    def __call__(self, model: FlowMapNet, x1: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.f2d2 and not model.has_div_head:
            raise ValueError("an F2D2 objective needs model.div_head: true")
        n_sg = semigroup.semigroup_rows(self.semigroup_fraction, x1.shape[0])
        x0 = noise_like(x1, generator)
        terms = self._tangent(model, x0[n_sg:], x1[n_sg:], generator)
        terms.update(self.semigroup_terms(model, x0[:n_sg], x1[:n_sg], generator))
        loss = terms["tangent"] + terms["sg"]
        if self.f2d2:
            loss = loss + self.lam * (terms["div"] + terms["sg_div"])
        loss = self.with_path_term(loss, terms, model, generator)
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def _tangent(self, model, x0, x1, generator) -> dict[str, torch.Tensor]:
        t = uniform_time(x1.shape[0], generator, x1)
        xt = interpolate(x0, x1, t)
        out = model(xt, t, t)
        terms, source = {}, None
        if self.f2d2:
            source = self.velocity_source(model)
            v_src, div_src = divergence_target(source, xt, t, self.div_method, generator)
            terms["div"] = (out.d - div_src / model.div_scale).pow(2).mean()
        if self.distill or self.self_source == "start":
            tangent = self.teacher if self.distill else self._own(model)
            # the velocity from the divergence call when it was the same network's
            target = v_src if tangent is source else velocity_target(tangent, xt, t)
        else:
            target = x1 - x0
        terms["tangent"] = (out.u - target).pow(2).mean()
        return terms
