"""MeanFlow (the Eulerian condition, via a JVP) and MeanFlow-F2D2.

With the paper's time direction (t = 0 noise, t = 1 data), x = I_s and a
velocity v at (x, s), the flow map's average velocity obeys
u(x, s, t) = v(x, s) + (t - s) du/ds, where du/ds is the total derivative along
the trajectory: the JVP of u in its inputs (x, s, t) with tangent (v, 1, 0).
``tangent`` picks v: the conditional velocity x1 - x0 (MeanFlow; unbiased, since
the targets are linear in v) or the teacher's v(x, s) (distillation, as
Shortcut-Distill does; far lower variance, and the map follows the teacher's flow).

    L_MF     = || u(x, s, t) - sg(v + (t - s) JVP_u) ||^2
    L_MF-div = || D(x, s, t) - sg(div v(x, s) / c + (t - s) JVP_D) ||^2     (F2D2)
    L = L_MF + lambda L_MF-div

With ``adaptive_p`` = p > 0 each point's squared error e of each term is weighted by
sg(1 / (e + 1e-3)^p), MeanFlow's adaptive loss weight (its code uses p = 0.75): the few large-gap
pairs with large errors no longer dominate the gradient. p = 0 is the plain mean squared error.

With ``semigroup_fraction`` > 0 that share of the batch trains the semigroup term that Shortcut trains
instead (``f2d2.objectives.semigroup``: the model's own half steps as the target, no JVP; its steps start on
the dyadic grid by default):

    L = L_MF + L_SG + lambda (L_MF-div + L_SG-div)

With ``teacher_path`` set, either loss gains lambda w L_path (targets from the teacher's own path:
``f2d2.objectives.teacher_path``).

The Eulerian target multiplies the model's s-derivative by the whole gap t - s; uniform pairs almost never
draw the full step (1, 0) that the one-step likelihood takes, and there the derivative is taken at the edge
of the time domain, next to the data. The semigroup term trains exactly the K = 2^j steps of evaluation
from the smaller steps that the Eulerian term learns well (docs/findings/).

With ``div_max_gap`` = g < 1, L_MF-div keeps only the pairs with |t - s| <= g (a mean over those), and D's
longer jumps are learned from the semigroup term alone: on real pixels the Eulerian divergence target of a long
jump from the data sits far from both its own halves and the teacher's integral (docs/findings/patches.md), and
held the K-step likelihoods apart.

Of the rest, a share ``1 - map_fraction`` has s = t (the tangent condition:
flow matching for u, divergence matching for D). ``two_way`` draws pairs in both
orders; otherwise s <= t; ``from_data`` moves a share of the pairs to start at the data (s = 1, backward).
The official MeanFlow code runs time the other way
(t = 1 noise); see ``f2d2.io.meanflow`` for converting its checkpoints.
"""

from __future__ import annotations

import torch

from f2d2.config.options import Option
from f2d2.nets import FlowMapNet, FlowMapOutput
from f2d2.objectives import semigroup
from f2d2.objectives.base import F2D2_OPTIONS, Objective
from f2d2.objectives.interpolant import (
    STEP_OPTIONS,
    check_from_data,
    expand_time,
    from_data,
    interpolate,
    noise_like,
    uniform_time,
)
from f2d2.objectives.targets import divergence_target, velocity_target


class MeanFlow(semigroup.SemigroupTerm, Objective):
    """MeanFlow and MeanFlow-F2D2 (``f2d2=True``); ``teacher`` a frozen network."""

    OPTIONS = (
        *F2D2_OPTIONS,
        Option(
            "tangent",
            "conditional",
            {"enum": ["conditional", "teacher"]},
            "the JVP's tangent velocity: x1 - x0 or the teacher's v(x, s)",
        ),
        Option(
            "map_fraction",
            0.25,
            {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "share of the Eulerian pairs with s != t (the rest: the tangent condition s = t)",
        ),
        *STEP_OPTIONS,
        Option(
            "div_max_gap",
            1.0,
            {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "L_MF-div trains only the pairs with |t - s| <= this (1: every pair); the semigroup term the rest",
            only={"f2d2": True},
        ),
        Option(
            "adaptive_p",
            0.0,
            {"type": "number", "minimum": 0},
            "per-point loss weight 1 / (error + 1e-3)^p (0: plain MSE)",
        ),
        *semigroup.semigroup_options(
            fraction=0.0,
            log2=1,
            grid="dyadic",
            fraction_allowed={"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        ),
    )
    NETWORKS = ("teacher",)
    TERMS = ("mf", "mf_div", *semigroup.TERMS, "path")
    DIVERGENCE_TERMS = ("mf_div", "sg_div", "path")
    uses_jvp = True

    def check(self) -> None:
        check_from_data(self.from_data, self.two_way)
        if self.f2d2 and self.div_max_gap < 1 and not self.semigroup_fraction:
            raise ValueError(
                f"div_max_gap = {self.div_max_gap} leaves D's jumps longer than it to the semigroup term, but "
                "semigroup_fraction = 0; set semigroup_fraction > 0 or div_max_gap = 1"
            )

    @property
    def needs_teacher(self) -> bool:
        return self.tangent == "teacher" or (self.f2d2 and self.div_source == "teacher")

    def velocity_source(self, model: FlowMapNet) -> FlowMapNet:
        """Where the divergence targets (F2D2; without a head, the tangent's) and the ``ode`` base step's velocity
        come from: the teacher, or the model's own."""
        teacher = (self.div_source == "teacher") if self.f2d2 else (self.tangent == "teacher")
        return self.teacher if teacher else model

    def times(self, b: int, generator: torch.Generator, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t), each (b,): a share map_fraction with s != t, ordered s <= t unless two_way; of those, a share
        ``from_data`` moved to start at the data (``interpolant.from_data``)."""
        a, c = uniform_time(b, generator, like), uniform_time(b, generator, like)
        if not self.two_way:
            a, c = torch.minimum(a, c), torch.maximum(a, c)
        on_map = torch.rand(b, generator=generator, device=like.device) < self.map_fraction
        s, t = a, torch.where(on_map, c, a)
        return from_data(s, t, self.from_data, generator)

    def __call__(self, model: FlowMapNet, x1: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.f2d2 and not model.has_div_head:
            raise ValueError("an F2D2 objective needs model.div_head: true")
        n_sg = semigroup.semigroup_rows(self.semigroup_fraction, x1.shape[0])
        terms = self._semigroup(model, x1[:n_sg], generator) if n_sg else {}  # the first rows, when any
        x1 = x1[n_sg:]
        x0 = noise_like(x1, generator)
        s, t = self.times(x1.shape[0], generator, x1)
        x = interpolate(x0, x1, s)
        v, div_src, source = x1 - x0, None, None
        if self.f2d2:
            source = self.velocity_source(model)
            v_src, div_src = divergence_target(source, x, s, self.div_method, generator)
        if self.tangent == "teacher":  # the teacher's velocity, from the divergence call when it made one
            v = v_src if source is self.teacher else velocity_target(self.teacher, x, s)
        out, u_target, d_target = eulerian_targets(model, x, s, t, v, div_src)
        err_u = (out.u - u_target).pow(2).reshape(x.shape[0], -1).mean(1)
        terms["mf"] = err_u.mean()
        loss = self._weighted(err_u)
        if self.f2d2:
            err_d = (out.d - d_target).pow(2)[(t - s).abs() <= self.div_max_gap]
            if err_d.numel():
                terms["mf_div"] = err_d.mean()
                loss = loss + self.lam * self._weighted(err_d)
            else:  # no pair within the gap: the term is 0 and adds nothing
                terms["mf_div"] = err_d.sum()
        if n_sg:
            loss = loss + terms["sg"] + self.lam * terms.get("sg_div", 0)
        loss = self.with_path_term(loss, terms, model, generator)
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def _semigroup(self, model: FlowMapNet, x1: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """L_SG (and L_SG-div) on the data batch x1 (b, *shape), with noise of its own."""
        return self.semigroup_terms(model, noise_like(x1, generator), x1, generator)

    def _weighted(self, err: torch.Tensor) -> torch.Tensor:
        """Mean of per-point squared errors err (B,), adaptively weighted when adaptive_p > 0."""
        if not self.adaptive_p:
            return err.mean()
        return (err / (err.detach() + 1e-3).pow(self.adaptive_p)).mean()


def eulerian_targets(
    model: FlowMapNet,
    x: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    v: torch.Tensor,
    div_v: torch.Tensor | None = None,
) -> tuple[FlowMapOutput, torch.Tensor, torch.Tensor | None]:
    """The model's outputs at (x, s, t) and the sg MeanFlow targets for u and (given div_v) D.

    x, v (B, *shape): points at times s and the velocity there; s, t (B,); div_v (B,) the
    divergence of v at (x, s). One JVP of both heads with tangent (v, 1, 0), in float32 even under autocast:
    u_target = v + (t - s) du/ds,  d_target = div_v / c + (t - s) dD/ds.
    """
    with_d = div_v is not None

    def heads(x_, s_, t_):
        out = model(x_, s_, t_)
        return (out.u, out.d) if with_d else (out.u,)

    v = v.to(x.dtype)  # a teacher's velocity under bfloat16 autocast is bfloat16
    with torch.autocast(x.device.type, enabled=False):  # jvp fails under autocast (f2d2.training.speed)
        outs, jvps = torch.func.jvp(heads, (x, s, t), (v, torch.ones_like(s), torch.zeros_like(t)))
    h = t - s
    u_target = (v + expand_time(h, x) * jvps[0]).detach()
    d_target = (div_v / model.div_scale + h * jvps[1]).detach() if with_d else None
    return FlowMapOutput(outs[0], outs[1] if with_d else None), u_target, d_target
