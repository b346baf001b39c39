"""The likelihood in one call: ``log_prob(model, x, steps=1)`` and ``bits_per_dim(model, pixels, steps=1)``.

Data sit at t = 1 and are integrated back to noise at t = 0 (x0 ~ N(0, I)); the result is
log p_1(x) = log N(x0; 0, I) - integral_0^1 div v(x_t, t) dt per point, in nats. What ``steps`` = K
means depends on the model (the K steps lie on the uniform grid 1, 1 - 1/K, ..., 0):

- an F2D2 flow map (a divergence head): K jumps of the map, the log-density change from the head;
  K network evaluations in all, no gradients (F2D2's few-step likelihood);
- a flow map without a head (Shortcut, MeanFlow) or a velocity model (flow matching, an
  ``ExternalVelocity``): K Euler steps of the joint ODE with the instantaneous velocity u(x, t, t) and
  its exact (or Hutchinson) divergence, the baseline of the paper's tables;
- ``steps=None``: the adaptive dopri5 solve of that joint ODE (the reference), any model.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from f2d2.core.likelihood import log_likelihood, reference_log_likelihood
from f2d2.core.options import divergence_for
from f2d2.eval import bpd
from f2d2.io.checkpoint import load_model
from f2d2.io.export import load_export
from f2d2.nets import FlowMapNet


def load(path: str | Path, device: str | torch.device = "cpu") -> FlowMapNet:
    """The network in ``path``, in eval mode on ``device``: a folder written by ``f2d2 export`` (model.safetensors
    + config.json, no pickle) or an f2d2 checkpoint .pt (its EMA weights)."""
    if Path(path).is_dir():
        return load_export(path, device)
    return load_model(path, ema=True, device=device)


def _model(model: FlowMapNet | str | Path, device: torch.device) -> FlowMapNet:
    if isinstance(model, (str, Path)):
        return load(model, device)
    if not isinstance(model, FlowMapNet):
        raise ValueError(
            f"model is a {type(model).__name__}; expected an f2d2 checkpoint path, an exported model's folder "
            "or a FlowMapNet (wrap a velocity model of your own in f2d2.ExternalVelocity)"
        )
    return model


def log_prob(
    model: FlowMapNet | str | Path,
    x: torch.Tensor,
    steps: int | None = 1,
    *,
    div: str | None = None,
    backward: str = "two-way",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log p(x) in nats, shape (B,), of data x (B, *model.data_shape) in model space, on x's device.

    model: a path :func:`load` reads (onto x's device) or a network already there. steps: K (see the
    module docstring) or None for the adaptive reference. div: "head"
    (default for a model with a divergence head), "exact" (default otherwise) or "hutchinson" (probes
    from ``generator``; far cheaper for images). backward: "two-way" queries u(x, s, t) with s > t;
    "forward-only" serves maps trained only for s < t (``objective.two_way: false``). batch_size:
    points per evaluation (default: all at once). Gradients are not tracked.
    """
    model = _model(model, x.device)
    if tuple(x.shape[1:]) != tuple(model.data_shape):
        raise ValueError(
            f"x has shape {tuple(x.shape)}; expected (B, *data_shape) = (B, {', '.join(map(str, model.data_shape))})"
        )
    if not (steps is None or (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1)):
        raise ValueError(f"steps = {steps!r}; expected an integer K >= 1, or None for the adaptive reference")
    div = divergence_for(div, has_head=model.has_div_head, adaptive=steps is None)
    out = []
    for chunk in x.split(batch_size or max(1, x.shape[0])):
        if steps is None:
            res = reference_log_likelihood(model, chunk, div=div, generator=generator)
        else:
            res = log_likelihood(model, chunk, steps, div=div, backward=backward, generator=generator)
        out.append(res.log_prob)
    return torch.cat(out)


def bits_per_dim(
    model: FlowMapNet | str | Path,
    pixels: torch.Tensor,
    steps: int | None = 1,
    *,
    dequant: torch.Generator | None = None,
    **options,
) -> torch.Tensor:
    """Bits per dimension, float64 (B,), of 8-bit images ``pixels`` (B, C, H, W), integers 0..255, on their device.

    Each image is dequantized once, z = 2 (x + U) / 256 - 1 with U ~ U[0, 1) from ``dequant``, and
    scored as ``log_prob(model, z, steps, **options)``; BPD = -log p_z(z) / (d ln 2) + 7
    (:mod:`f2d2.eval.bpd`). For points (no images) use ``log_prob`` and ``f2d2.eval.bpd.bits_per_dim``.
    """
    model = _model(model, pixels.device)
    if len(model.data_shape) != 3:
        raise ValueError(
            f"bits_per_dim scores 8-bit images; the model's data_shape is {tuple(model.data_shape)}, "
            "not (C, H, W): use f2d2.log_prob"
        )
    dim = math.prod(model.data_shape)
    log_pz = log_prob(model, bpd.dequantize(pixels, dequant), steps, **options)
    return bpd.bits_per_dim(bpd.pixel_nll(log_pz.double(), dim), dim)


__all__ = ["bits_per_dim", "load", "log_prob"]
