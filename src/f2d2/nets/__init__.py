"""Backbones of a joint flow map: ``model(x, s, t) -> FlowMapOutput(u, d)``.

Every network here takes a batch ``x`` of shape (B, *data_shape) and two times
``s, t`` of shape (B,) in [0, 1] (t = 0 noise, t = 1 data) and returns

- ``u``: the average velocity of the flow map X_{s,t}(x) = x + (t - s) u(x, s, t),
  same shape as ``x``; ``u(x, t, t)`` is the instantaneous velocity v(x, t);
- ``d``: the divergence head D(x, s, t), shape (B,), the average divergence of v
  along the trajectory from s to t divided by ``model.div_scale`` (c), or ``None``
  when the network has no divergence head (a plain flow-matching teacher).
"""

from __future__ import annotations

from f2d2.nets.base import FlowMapNet, FlowMapOutput
from f2d2.nets.mlp import MLPFlowMap
from f2d2.nets.unet import UNetFlowMap

ARCHITECTURES = {"mlp": MLPFlowMap, "unet": UNetFlowMap}


def build_model(cfg: dict) -> FlowMapNet:
    """Build a network from a model config such as ``{"arch": "mlp", "dim": 2, ...}``."""
    cfg = dict(cfg)
    arch = cfg.pop("arch", "mlp")
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch = {arch!r} is unknown; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**cfg)


__all__ = ["ARCHITECTURES", "FlowMapNet", "FlowMapOutput", "MLPFlowMap", "UNetFlowMap", "build_model"]
