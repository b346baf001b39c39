"""Likelihood and sampling in one call: ``log_prob(model, x, steps=1)``, ``bits_per_dim(model, pixels, steps=1)``
and ``sample(model, n, steps=1, log_prob=True)``.

Data sit at t = 1 and are integrated back to noise at t = 0 (x0 ~ N(0, I)); the result is
log p_1(x) = log N(x0; 0, I) - integral_0^1 div v(x_t, t) dt per point, in nats. What ``steps`` = K
means depends on the model (the K steps lie on the uniform grid 1, 1 - 1/K, ..., 0):

- an F2D2 flow map (a divergence head): K jumps of the map, the log-density change from the head;
  K network evaluations in all (F2D2's few-step likelihood);
- a flow map without a head (Shortcut, MeanFlow) or a velocity model (flow matching, an
  ``ExternalVelocity``): K Euler steps of the joint ODE with the instantaneous velocity u(x, t, t) and
  its exact (or Hutchinson) divergence, the baseline of the paper's tables;
- ``steps=None``: the adaptive dopri5 solve of that joint ODE (the reference), any model.

``sample`` walks the same steps forward, on the grid 0, 1/K, ..., 1, from noise to data. No gradients are
tracked unless ``grad=True``: then the results keep the autograd graph to the inputs and the parameters.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from f2d2.core.guidance import Guidance, check_guidance
from f2d2.core.likelihood import log_likelihood_or_reference
from f2d2.core.options import LOG_PROB_FROM, divergence_for
from f2d2.core.sampling import sample_in_batches
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


def _check_steps(steps) -> None:
    if not (steps is None or (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1)):
        raise ValueError(f"steps = {steps!r}; expected an integer K >= 1, or None for the adaptive reference")


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} = {value!r}; expected True or False")


def log_prob(
    model: FlowMapNet | str | Path,
    x: torch.Tensor,
    steps: int | None = 1,
    *,
    div: str | None = None,
    backward: str = "two-way",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    grad: bool = False,
) -> torch.Tensor:
    """log p(x) in nats, shape (B,), of data x (B, *model.data_shape) in model space, on x's device.

    model: a path :func:`load` reads (onto x's device) or a network already there. steps: K (see the
    module docstring) or None for the adaptive reference. div: "head"
    (default for a model with a divergence head), "exact" (default otherwise) or "hutchinson" (probes
    from ``generator``; far cheaper for images). backward: "two-way" queries u(x, s, t) with s > t;
    "forward-only" serves maps trained only for s < t (``objective.two_way: false``). batch_size:
    points per evaluation (default: all at once). grad: keep the autograd graph, so that gradients flow to
    x and the model's parameters (the exact divergence is then differentiated twice; the reference
    backpropagates through the solver's steps); by default gradients are not tracked.
    """
    _check_steps(steps)
    _check_flag("grad", grad)
    model = _model(model, x.device)
    if tuple(x.shape[1:]) != tuple(model.data_shape):
        raise ValueError(
            f"x has shape {tuple(x.shape)}; expected (B, *data_shape) = (B, {', '.join(map(str, model.data_shape))})"
        )
    div = divergence_for(div, has_head=model.has_div_head, adaptive=steps is None)
    chunks = x.split(batch_size or max(1, x.shape[0]))
    return torch.cat(
        [
            log_likelihood_or_reference(model, chunk, steps, div=div, backward=backward, generator=generator, grad=grad)
            for chunk in chunks
        ]
    )


def _guidance(guidance: Guidance | dict | None) -> Guidance | None:
    if guidance is None or isinstance(guidance, Guidance):
        return guidance
    if isinstance(guidance, dict) and "lr" in guidance and set(guidance) <= {"lr", "steps"}:
        return Guidance(**guidance)
    raise ValueError(
        f"guidance = {guidance!r}; expected None or {{'lr': learning rate > 0, 'steps': Adam steps >= 0 "
        "(default 1)}} (or an f2d2.core.guidance.Guidance)"
    )


def _placement(model: FlowMapNet) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's weights (CPU and the default dtype when it has none)."""
    for w in (*model.parameters(), *model.buffers()):
        if w.is_floating_point():
            return w.device, w.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def sample(
    model: FlowMapNet | str | Path,
    n_or_noise: int | torch.Tensor,
    steps: int | None = 1,
    *,
    log_prob: bool = False,
    guidance: Guidance | dict | None = None,
    generator: torch.Generator | None = None,
    div: str | None = None,
    log_prob_from: str = "noise",
    batch_size: int | None = None,
    grad: bool = False,
):
    """Samples x1 (B, *model.data_shape) at t = 1 from noise at t = 0; with ``log_prob`` (x1, log q) in nats, (B,).

    model: as in ``log_prob`` (a checkpoint is loaded onto the noise's device, or ``generator``'s for an int,
    else the CPU). n_or_noise: a number n >= 1 of samples, their noise N(0, I) drawn at once from ``generator``
    on the model's device in its dtype (as ``f2d2 sample --seed`` draws it), or the noise itself
    (B, *data_shape). steps: K uniform forward steps (flow-map jumps; Euler steps of the velocity for a
    flow-matching model) or None for the adaptive dopri5 reference.

    log_prob: also return log q(x1) = log N(x0; 0, I) - integral_0^1 div v dt along the same forward steps:
    the head's density change for an F2D2 model; for a model without one (or div="exact"/"hutchinson",
    probes from ``generator``) the steps are then Euler steps of the joint ODE with the instantaneous velocity
    u(x, t, t), whose density they track (so a Shortcut/MeanFlow map's samples differ from its jumps'); with
    steps=None the joint ODE's dopri5 solve (x1 equal to the plain reference's to its tolerance). div is
    decided as in ``log_prob`` and only allowed with log_prob. log_prob_from="sample": log q is instead
    ``log_prob(model, x1, steps, div=div)`` of each returned sample (K backward steps from it; x1 as without
    log_prob), at twice the cost; for an F2D2 model the forward head gives about the teacher's density at the
    teacher's endpoint of the same noise, not at x1, and is off by nats where that endpoint error meets a steep
    density, so importance weights want "sample" (``core.sampling``).

    guidance: maximum-likelihood self-guidance of the noise before sampling, {"lr": ..., "steps": ...}
    (``f2d2 sample --guidance-lr/--guidance-steps``; F2D2 models). log q is then the density of the returned
    sample under the model, not of the guided sampler's distribution. batch_size: samples per batch (the noise
    is drawn at once, so results do not depend on it). grad: keep the autograd graph to the noise and the
    parameters (guided noise enters as a constant); by default gradients are not tracked.
    """
    _check_steps(steps)
    _check_flag("log_prob", log_prob)
    _check_flag("grad", grad)
    if isinstance(n_or_noise, bool) or not isinstance(n_or_noise, (int, torch.Tensor)):
        raise ValueError(f"n_or_noise is a {type(n_or_noise).__name__}; expected a number n >= 1 or a noise tensor")
    if isinstance(n_or_noise, int) and n_or_noise < 1:
        raise ValueError(f"n = {n_or_noise}; expected a number of samples >= 1")
    if div is not None and not log_prob:
        raise ValueError(f"div = {div!r} chooses the divergence of log q; it needs log_prob=True")
    if log_prob_from not in LOG_PROB_FROM:
        raise ValueError(f"log_prob_from = {log_prob_from!r}; expected one of {list(LOG_PROB_FROM)}")
    if log_prob_from != "noise" and not log_prob:
        raise ValueError(f"log_prob_from = {log_prob_from!r} chooses how log q is computed; it needs log_prob=True")
    guidance = _guidance(guidance)
    if isinstance(n_or_noise, torch.Tensor):
        device = n_or_noise.device
    else:
        device = generator.device if generator is not None else torch.device("cpu")
    model = _model(model, device)
    shape = tuple(model.data_shape)
    if isinstance(n_or_noise, torch.Tensor) and (
        n_or_noise.dim() != 1 + len(shape) or tuple(n_or_noise.shape[1:]) != shape or len(n_or_noise) == 0
    ):
        raise ValueError(
            f"noise has shape {tuple(n_or_noise.shape)}; expected (B >= 1, *data_shape) = "
            f"(B, {', '.join(map(str, shape))})"
        )
    if log_prob:
        div = divergence_for(div, has_head=model.has_div_head, adaptive=steps is None)
    if guidance is not None:
        check_guidance(model, guidance)
    if isinstance(n_or_noise, torch.Tensor):
        x0 = n_or_noise
    else:
        device, dtype = _placement(model)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"generator is on {generator.device}, the model on {device}; expected a generator on the "
                "model's device to draw its noise"
            )
        x0 = torch.randn((n_or_noise, *shape), generator=generator, device=device, dtype=dtype)
    x1, log_q = sample_in_batches(
        model,
        x0,
        steps,
        div=div,
        log_prob_from=log_prob_from,
        guidance=guidance,
        batch_size=batch_size,
        generator=generator,
        grad=grad,
    )
    return (x1, log_q) if log_prob else x1


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


__all__ = ["bits_per_dim", "load", "log_prob", "sample"]
