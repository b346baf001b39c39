"""Shortcut models (semigroup self-consistency) and their F2D2 variants.

One batch of data x1 (B, *shape) is split: a share ``sc_fraction`` enforces the
semigroup property on dyadic steps d in {1, 1/2, ..., 2^-max_log2}, the rest the
tangent condition at s = t. With m = (s + t) / 2 and x = I_s:

    L_tangent = || u(I_t, t, t) - target ||^2       target = x1 - x0, teacher v (distill) or v_start
    L_SC      = || u(x, s, t) - sg((u(x, s, m) + u(X_{s,m}(x), m, t)) / 2) ||^2
    L_div     = || D(I_t, t, t) - sg(div v(I_t, t)) / c ||^2                    (F2D2)
    L_divSC   = || D(x, s, t) - sg((D(x, s, m) + D(X_{s,m}(x), m, t)) / 2) ||^2   (F2D2)
    L = L_tangent + L_SC + lambda (L_div + L_divSC)

``two_way`` also draws steps with t < s (signed step t - s), so that the map can
integrate backwards from data to noise; otherwise every step has s < t. ``from_data`` moves a share of
the semigroup steps to start at the data (s = 1, backward), where the likelihood's steps start. ``time_grid``: where a
step of size d starts, ``continuous`` (s ~ U[0, 1 - d]) or ``dyadic`` (s a multiple of d, as in the
shortcut-models paper and the authors' code): the K = 2^j steps of evaluation start exactly there, and
the midpoints of the semigroup targets lie on the next finer grid.

``self_source`` says where Shortcut(-F2D2)'s own velocity comes from: ``live``, the network in training
(the paper: the tangent target is x1 - x0 and, with ``div_source: self``, the divergence is that of
u(x, t, t)), or ``start``, a frozen copy ``start`` of the network the run warm-starts from (train.init_from):
the tangent target is then sg(v_start(I_t, t)) and the divergence that of v_start, so the finetuning learns
the likelihood of the Shortcut model it was given, still without a teacher. In 2D the live velocity kept
moving under the data term while the maps and the head learned it (0.17 nats per point from the teacher's
flow after 4000 steps; config/config.yaml's comments).

``base_step`` sets the targets of the finest step d = 2^-max_log2, where the recursion bottoms out:
``halves`` (the paper) as above, through two half steps of a size the model is never trained on (which it
answers about as its tangent at their start: a left Riemann sum, first order in d); ``heun`` from the
instantaneous fields at both ends, second order in d:

    u_target = (u(x, s, s) + u(x', t, t)) / 2,  D_target = (D(x, s, s) + D(x', t, t)) / 2,  x' = x + (t - s) u(x, s, s)

(on 8x8 patches the teacher's divergence falls from -2,050 at t = 1 to -1,870 at 1 - 1/32: a backward left
sum of 64 steps is 0.11 bits/dim off its integral, the trapezoid of 32 steps 0.003). Measured, it moved
neither the 2D default's one-step error nor the patches' one-step BPD (config comments): the default stays.
"""

from __future__ import annotations

import torch

from f2d2.core.flowmap import jump
from f2d2.nets import FlowMapNet
from f2d2.objectives.base import Objective
from f2d2.objectives.interpolant import (
    TIME_GRIDS,
    check_from_data,
    dyadic_steps,
    from_data,
    interpolate,
    noise_like,
    uniform_time,
)
from f2d2.objectives.targets import divergence_target, semigroup_targets, velocity_target

BASE_STEPS = ("halves", "heun")  # the finest step's targets: two half steps (the paper), or Heun's rule
SELF_SOURCES = ("live", "start")  # the model's "own" velocity: the network in training, or its frozen start


class Shortcut(Objective):
    """Shortcut, Shortcut-Distill and their F2D2 variants (``f2d2=True``); ``teacher`` a frozen network,
    ``start`` the frozen network the run warm-starts from (``self_source: start``)."""

    def __init__(
        self,
        *,
        distill: bool = False,
        f2d2: bool = False,
        teacher: FlowMapNet | None = None,
        div_source: str = "teacher",
        div_method: str = "exact",
        lam: float = 1.0,
        sc_fraction: float = 0.25,
        max_log2: int = 7,
        two_way: bool = True,
        time_grid: str = "continuous",
        base_step: str = "halves",
        from_data: float = 0.0,
        self_source: str = "live",
        start: FlowMapNet | None = None,
    ):
        check_from_data(from_data, two_way)
        self.from_data = float(from_data)
        if self_source not in SELF_SOURCES:
            raise ValueError(f"objective.self_source = {self_source!r}; expected one of {SELF_SOURCES}")
        if self_source == "start" and distill:
            raise ValueError("objective.self_source = 'start' is for Shortcut(-F2D2), which has no teacher velocity")
        self.self_source, self.start = self_source, start
        if time_grid not in TIME_GRIDS:
            raise ValueError(f"objective.time_grid = {time_grid!r}; expected one of {TIME_GRIDS}")
        if base_step not in BASE_STEPS:
            raise ValueError(f"objective.base_step = {base_step!r}; expected one of {BASE_STEPS}")
        self.base_step = base_step
        self.distill, self.f2d2, self.lam, self.teacher = distill, f2d2, float(lam), teacher
        self.div_source, self.div_method = div_source, div_method
        self.sc_fraction, self.max_log2, self.two_way = sc_fraction, max_log2, two_way
        self.time_grid = time_grid

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

    @property
    def trains_div_head(self) -> bool:
        return self.f2d2

    def fits_steps(self, k: int) -> bool:
        """K a power of two <= 2^max_log2: the dyadic step sizes 2^-j, j = 0..max_log2, of the SC term."""
        return k >= 1 and k & (k - 1) == 0 and k <= 2**self.max_log2

    def steps_rule(self) -> str:
        m = self.max_log2
        return (
            f"a Shortcut model with objective.max_log2 = {m} is trained on step sizes 2^-j, j = 0..{m}, so K "
            f"must be a power of two <= {2**m}"
        )

    def __call__(self, model: FlowMapNet, x1: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.f2d2 and not model.has_div_head:
            raise ValueError("an F2D2 objective needs model.div_head: true")
        n_sc = max(1, int(round(self.sc_fraction * x1.shape[0])))
        x0 = noise_like(x1, generator)
        terms = self._tangent(model, x0[n_sc:], x1[n_sc:], generator)
        terms.update(self._self_consistency(model, x0[:n_sc], x1[:n_sc], generator))
        loss = terms["tangent"] + terms["sc"]
        if self.f2d2:
            loss = loss + self.lam * (terms["div"] + terms["div_sc"])
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def _tangent(self, model, x0, x1, generator) -> dict[str, torch.Tensor]:
        t = uniform_time(x1.shape[0], generator, x1)
        xt = interpolate(x0, x1, t)
        out = model(xt, t, t)
        terms, source = {}, None
        if self.f2d2:
            source = self.teacher if self.div_source == "teacher" else self._own(model)
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

    def times(self, b: int, generator: torch.Generator, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t), each (B,): the semigroup term's dyadic steps (``dyadic_steps`` with this objective's grid), a
        share ``from_data`` of them moved to start at the data (``interpolant.from_data``)."""
        s, t = dyadic_steps(b, self.max_log2, generator, like, grid=self.time_grid, two_way=self.two_way)
        return from_data(s, t, self.from_data, generator)

    def _self_consistency(self, model, x0, x1, generator) -> dict[str, torch.Tensor]:
        s, t = self.times(x1.shape[0], generator, x1)
        x = interpolate(x0, x1, s)
        u_target, d_target = semigroup_targets(model, x, s, t)
        if self.base_step == "heun":
            finest = (t - s).abs() <= 2.0**-self.max_log2
            if finest.any():
                u_base, d_base = heun_targets(model, x[finest], s[finest], t[finest])
                u_target[finest] = u_base
                if d_target is not None:
                    d_target[finest] = d_base
        out = model(x, s, t)
        terms = {"sc": (out.u - u_target).pow(2).mean()}
        if self.f2d2:
            terms["div_sc"] = (out.d - d_target).pow(2).mean()
        return terms


@torch.no_grad()
def heun_targets(model: FlowMapNet, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor):
    """Heun's rule from the instantaneous fields at both ends of the step: sg targets for u(x, s, t) and
    D(x, s, t) (None without a head); x (B, *shape) at times s; s, t (B,).

    Second order in t - s: for an exact flow map the residual falls ~4x when the step halves (not zero)."""
    start = model(x, s, s)
    end = model(jump(x, s, t, start.u), t, t)
    d = (start.d + end.d) / 2 if start.d is not None else None
    return (start.u + end.u) / 2, d
