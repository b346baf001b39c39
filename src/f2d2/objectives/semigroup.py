"""The semigroup term, shared by Shortcut and MeanFlow: a flow map's step from s to t equals its two half
steps through m = (s + t) / 2, so the model's own half steps are the target of its full step (under
stop-gradient). With x = I_s on dyadic steps |t - s| = 2^-j, j = 0..``semigroup_log2``:

    L_SG     = || u(x, s, t) - sg((u(x, s, m) + u(X_{s,m}(x), m, t)) / 2) ||^2
    L_SG-div = || D(x, s, t) - sg((D(x, s, m) + D(X_{s,m}(x), m, t)) / 2) ||^2     (F2D2)

``time_grid``: where a step of size d starts, ``continuous`` (s ~ U[0, 1 - d]) or ``dyadic`` (s a multiple
of d, where the K = 2^j steps of evaluation start; the midpoints of the targets lie on the next finer grid).
``base_step`` sets the targets of the finest step d = 2^-semigroup_log2, where the recursion bottoms out:
``halves`` (the paper), through two half steps of a size the model is never trained on (which it answers
about as its tangent at their start: a left Riemann sum, first order in d), ``heun``, from the
instantaneous fields at both ends, second order in d:

    u_target = (u(x, s, s) + u(x', t, t)) / 2,  D_target = (D(x, s, s) + D(x', t, t)) / 2,  x' = x + (t - s) u(x, s, s)

or ``ode``, from the velocity v (the objective's ``velocity_source``: the model's own u(., tau, tau) or the teacher's)
integrated over the step in 8 midpoint substeps, its divergence (``div_method``) taken at each substep's midpoint:
u_target = (x_t - x) / (t - s), D_target = mean of div v / c. It does not ask the head at all, so a divergence that
changes fast within the finest step (near the data) is integrated, not read off two points (docs/findings/).

``div_step_power`` p weighs each row of L_SG-div by |t - s|^p (normalised to a mean of 1 over the batch): with
p = 0 a step's error in D (an average divergence) counts alike at every size, though it moves log p by
c |t - s| times as much; p = 1 gives the coarse steps of few-step likelihoods their share (docs/findings/).

``two_way`` draws half of the steps backward (t < s); ``from_data`` moves a share of them to start at the
data (s = 1, backward), where every K-step likelihood starts. Time runs from t = 0 (noise) to t = 1 (data).
"""

from __future__ import annotations

import torch

from f2d2.config.options import Option
from f2d2.core.flowmap import expand_time, jump
from f2d2.nets import FlowMapNet
from f2d2.objectives.interpolant import TIME_GRIDS, dyadic_steps, from_data, interpolate
from f2d2.objectives.targets import divergence_target

TERMS = ("sg", "sg_div")  # the term, and its divergence-head twin (F2D2)
# the finest step's targets: two half steps (the paper), Heun's rule, or the velocity's own ODE over the step
BASE_STEPS = ("halves", "heun", "ode")


def semigroup_options(*, fraction: float, log2: int, grid: str, fraction_allowed: dict) -> tuple[Option, ...]:
    """The term's options with an objective's defaults (``fraction_allowed``: the JSON-schema node of the
    batch share, whose range differs: Shortcut always trains the term, MeanFlow may leave it out)."""
    return (
        Option(
            "semigroup_fraction",
            fraction,
            fraction_allowed,
            "share of the batch on the semigroup term",
            renamed_from="sc_fraction",
        ),
        Option(
            "semigroup_log2",
            log2,
            {"type": "integer", "minimum": 0, "maximum": 30},
            "the term's steps have sizes 2^-j, j = 0..semigroup_log2",
            renamed_from="max_log2",
        ),
        Option(
            "time_grid",
            grid,
            {"enum": list(TIME_GRIDS)},
            "where a step of size d starts: anywhere (continuous) or at a multiple of d (dyadic)",
        ),
        Option(
            "div_step_power",
            0.0,
            {"type": "number", "minimum": 0},
            "L_SG-div's rows weighed by |t - s|^p (mean 1 over the batch); 0: unweighted",
        ),
        Option(
            "base_step",
            "halves",
            {"enum": list(BASE_STEPS)},
            "the finest step's targets: two half steps, Heun's rule, or the velocity's ODE over the step",
        ),
    )


def semigroup_rows(fraction: float, b: int) -> int:
    """How many of a batch of ``b`` rows train the term: round(fraction * b), at least one when fraction > 0,
    at most b - 1 (the rest train the objective's other terms)."""
    if not fraction:
        return 0
    return min(max(1, int(round(fraction * b))), b - 1)


class SemigroupTerm:
    """The term for an objective that declares :func:`semigroup_options` (and ``two_way``, ``from_data``,
    ``f2d2``) among its options."""

    def semigroup_times(
        self, b: int, generator: torch.Generator, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t), each (b,): dyadic steps 2^-j, j = 0..semigroup_log2, on ``time_grid``, both orders unless not
        two_way; a share ``from_data`` of them moved to start at the data (``interpolant.from_data``)."""
        s, t = dyadic_steps(b, self.semigroup_log2, generator, like, grid=self.time_grid, two_way=self.two_way)
        return from_data(s, t, self.from_data, generator)

    def velocity_source(self, model: FlowMapNet) -> FlowMapNet:
        """Whose instantaneous velocity the ``ode`` base step integrates: the model's own (objectives with a
        teacher say when it is the teacher's)."""
        return model

    def semigroup_terms(
        self, model: FlowMapNet, x0: torch.Tensor, x1: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """L_SG (and L_SG-div for F2D2) on noise x0 and data x1 (b, *shape), on steps it draws."""
        s, t = self.semigroup_times(x1.shape[0], generator, x1)
        x = interpolate(x0, x1, s)
        u_target, d_target = semigroup_targets(model, x, s, t)
        last = (t - s).abs() <= 2.0**-self.semigroup_log2
        if self.base_step != "halves" and last.any():
            if self.base_step == "heun":
                u_base, d_base = heun_targets(model, x[last], s[last], t[last])
            else:
                source, scale = self.velocity_source(model), (model.div_scale if self.f2d2 else None)
                u_base, d_base = ode_targets(source, x[last], s[last], t[last], scale, self.div_method, generator)
            u_target[last] = u_base
            if d_target is not None:
                d_target[last] = d_base
        out = model(x, s, t)
        terms = {"sg": (out.u - u_target).pow(2).mean()}
        if self.f2d2:
            weight = (t - s).abs().pow(self.div_step_power)
            terms["sg_div"] = ((out.d - d_target).pow(2) * weight / weight.mean()).mean()
        return terms


@torch.no_grad()
def semigroup_targets(model: FlowMapNet, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor):
    """Two half steps through m = (s + t) / 2: sg targets for u(x, s, t) and D(x, s, t) (None without a head).

    x (B, *shape) at times s; s, t (B,). For an exact flow map both equal the map's own outputs.
    """
    m = (s + t) / 2
    first = model(x, s, m)
    second = model(jump(x, s, m, first.u), m, t)
    d = (first.d + second.d) / 2 if first.d is not None else None
    return (first.u + second.u) / 2, d


@torch.no_grad()
def heun_targets(model: FlowMapNet, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor):
    """Heun's rule from the instantaneous fields at both ends of the step: sg targets for u(x, s, t) and
    D(x, s, t) (None without a head); x (B, *shape) at times s; s, t (B,).

    Second order in t - s: for an exact flow map the residual falls ~4x when the step halves (not zero)."""
    start = model(x, s, s)
    end = model(jump(x, s, t, start.u), t, t)
    d = (start.d + end.d) / 2 if start.d is not None else None
    return (start.u + end.u) / 2, d


def ode_targets(
    source: FlowMapNet,
    x: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    div_scale: float | None,
    method: str,
    generator: torch.Generator,
    substeps: int = 8,
):
    """The velocity v = u(., tau, tau) of ``source`` integrated from x (B, *shape) at s to t (B,) in ``substeps``
    midpoint steps: sg targets u = (x_t - x) / (t - s) and D = the mean over the substeps of div v / ``div_scale``
    at their midpoints (``method``: exact or Hutchinson with a probe from ``generator``); D is None when
    ``div_scale`` is (no head).

    Second order in the substep: for an exact flow map the residual falls ~4x when the substeps double."""
    h = (t - s) / substeps
    y, d = x, torch.zeros(len(x), dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for i in range(substeps):
            tau = s + i * h
            mid = jump(y, tau, tau + h / 2, source.velocity(y, tau))
            if div_scale is None:
                v_mid = source.velocity(mid, tau + h / 2)
            else:
                v_mid, div_mid = divergence_target(source, mid, tau + h / 2, method, generator)
                d = d + div_mid / substeps
            y = jump(y, tau, tau + h, v_mid)
    return (y - x) / expand_time(t - s, x), (None if div_scale is None else d / div_scale)
