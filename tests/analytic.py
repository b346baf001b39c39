"""Closed-form flows for tests: Gaussian data N(mu, sigma^2 I) under the linear interpolant.

With x_t = (1 - t) x0 + t x1, x0 ~ N(0, I), the marginal is N(t mu, sigma_t^2 I) with
sigma_t^2 = (1 - t)^2 + t^2 sigma^2, the flow-matching velocity is
v(x, t) = mu + (sigma_t' / sigma_t) (x - t mu), linear in x, and its flow map and
average divergence are closed form:
X_{s,t}(x) = t mu + (sigma_t / sigma_s)(x - s mu),  avgdiv = d (ln sigma_t - ln sigma_s) / (t - s).
"""

from __future__ import annotations

import math

import torch

from f2d2.nets import FlowMapNet, FlowMapOutput


class GaussianFlow(FlowMapNet):
    """The exact joint flow map of Gaussian data; ``flow_map=False`` turns it into a velocity-only model."""

    def __init__(self, mu, sigma: float, *, flow_map: bool = True, div_scale: float = 1.0):
        super().__init__(div_scale=div_scale, flow_map=flow_map)
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float32))
        self.sigma = float(sigma)
        self.data_shape = (self.mu.numel(),)
        self.has_div_head = flow_map

    def sigma_t(self, t: torch.Tensor) -> torch.Tensor:
        return ((1 - t) ** 2 + (t * self.sigma) ** 2).sqrt()

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t' / sigma_t, shape (B,)."""
        return (t * self.sigma**2 - (1 - t)) / self.sigma_t(t) ** 2

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> FlowMapOutput:
        d = x.shape[1]
        h = t - s
        same = h.abs() < 1e-6
        safe_h = torch.where(same, torch.ones_like(h), h)
        log_ratio = self.sigma_t(t).log() - self.sigma_t(s).log()
        jump = t[:, None] * self.mu + (log_ratio.exp()[:, None]) * (x - s[:, None] * self.mu)
        u_map = (jump - x) / safe_h[:, None]
        u_tan = self.mu + self.rate(s)[:, None] * (x - s[:, None] * self.mu)
        u = torch.where(same[:, None], u_tan, u_map)
        avgdiv = torch.where(same, d * self.rate(s), d * log_ratio / safe_h)
        return FlowMapOutput(u, avgdiv / self.div_scale if self.has_div_head else None)

    def log_prob_data(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mu, sigma^2 I), shape (B,)."""
        d = x.shape[1]
        return (
            -0.5 * ((x - self.mu) ** 2).sum(1) / self.sigma**2
            - d * math.log(self.sigma)
            - 0.5 * d * math.log(2 * math.pi)
        )
