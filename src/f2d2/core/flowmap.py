"""The one flow-map step, shared by sampling and by every few-step likelihood.

A step moves a batch from time s to time t (either direction; t = 0 noise,
t = 1 data) and returns the change of log-density along it:

    x_t = x_s + (t - s) * u(x_s, s, t)
    log p_t(x_t) - log p_s(x_s) = -(t - s) * avgdiv

``avgdiv`` (B,) is the average divergence of the velocity over the step:

- ``"head"`` (F2D2): c * D(x_s, s, t), the learned divergence head;
- ``"exact"`` / ``"hutchinson"`` (baselines): div v(x_s, s) of the instantaneous
  velocity v(x, s) = u(x, s, s), so the step is an Euler step of the joint ODE.

A model trained only as a velocity field (``model.flow_map`` false, e.g. the
flow-matching teacher) is always stepped with Euler, u(x_s, s, s).

``backward="forward-only"`` serves maps trained only for s < t (the paper's
Section 3.3): a step with s > t reuses the forward map of the reversed interval,
x_t = x_s - (s - t) u(x_s, t, s) and avgdiv = c D(x_s, t, s), a first-order
approximation. ``"two-way"`` queries u(x_s, s, t) directly (signed step t - s).
"""

from __future__ import annotations

import torch

from f2d2.core.divergence import divergence
from f2d2.core.options import BACKWARD_MODES, DIVERGENCE_SOURCES
from f2d2.nets import FlowMapNet


def expand_time(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Times (B,) reshaped to (B, 1, ..., 1), to broadcast against a batch x (B, *shape)."""
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def jump(x: torch.Tensor, s, t, u: torch.Tensor) -> torch.Tensor:
    """X_{s,t}(x) = x + (t - s) u; s, t are floats or (B,) tensors, x and u (B, *shape)."""
    h = t - s
    if isinstance(h, torch.Tensor) and h.dim() == 1:
        h = expand_time(h, x)
    return x + h * u


def flow_map_step(
    model: FlowMapNet,
    x: torch.Tensor,
    s: float,
    t: float,
    *,
    div: str | None = None,
    backward: str = "two-way",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Move x (B, *data_shape) from time s to t; return (x_t, dlogp) with dlogp (B,) or None if div is None.

    Follows the grad mode: with gradients enabled, x_t and dlogp are differentiable in x and the
    parameters (self-guidance, a differentiable log-density; the exact/Hutchinson divergence then keeps its
    graph, ``create_graph``); inference callers wrap it in ``torch.no_grad()``.
    """
    if div is not None and div not in DIVERGENCE_SOURCES:
        raise ValueError(f"divergence source {div!r} is unknown; expected one of {DIVERGENCE_SOURCES}")
    if backward not in BACKWARD_MODES:
        raise ValueError(f"backward mode {backward!r} is unknown; expected one of {BACKWARD_MODES}")
    if div == "head" and not model.has_div_head:
        raise ValueError("divergence source 'head' needs a model with a divergence head (an F2D2 checkpoint)")
    b = x.shape[0]
    h = t - s
    if div in ("exact", "hutchinson") or not model.flow_map:
        # Euler step of the joint ODE with the instantaneous velocity v(x, s) = u(x, s, s).
        ss = x.new_full((b,), s)
        if div is None:
            return jump(x, s, t, model.velocity(x, ss)), None
        if div == "head":
            raise ValueError("divergence source 'head' needs a flow map with a divergence head")
        v, dv = divergence(
            lambda y: model.velocity(y, ss), x, div, generator=generator, create_graph=torch.is_grad_enabled()
        )
        return jump(x, s, t, v), -h * dv
    # Flow-map step; forward-only maps take a backward step through the reversed interval.
    a, e = (t, s) if (backward == "forward-only" and t < s) else (s, t)
    out = model(x, x.new_full((b,), a), x.new_full((b,), e))
    x_next = jump(x, s, t, out.u)
    if div is None:
        return x_next, None
    return x_next, -h * model.div_scale * out.d
