"""bench/jumps.py's semigroup residual: zero for the exact joint flow map, the known amount for a head that is
not consistent with its own half jumps."""

from __future__ import annotations

import pytest
import torch

from analytic import GaussianFlow
from f2d2.nets import FlowMapOutput
from pipeline_helpers import load_bench

jumps = load_bench("jumps")


class StepBiasedHead(GaussianFlow):
    """The exact flow map with delta |t - s| added to its average divergence (nats per unit time): a jump's dlogp
    then differs from its two halves' by delta (t - s) |t - s| / 2."""

    def __init__(self, delta: float):
        super().__init__([0.5, -1.0], 0.3, flow_map=True, div_scale=7.0)
        self.delta = delta

    def forward(self, x, s, t):
        out = super().forward(x, s, t)
        return FlowMapOutput(out.u, out.d + self.delta * (t - s).abs() / self.div_scale)


@pytest.mark.parametrize("s, t", [(1.0, 0.5), (0.5, 0.0), (1.0, 0.0), (0.25, 0.75)])
def test_semigroup_residual_is_zero_for_the_exact_flow_map_and_measures_an_inconsistent_head(s, t):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    exact = jumps.semigroup_residual(GaussianFlow([0.5, -1.0], 0.3, div_scale=7.0), x, s, t, "two-way")
    assert exact.shape == (64,)
    assert exact.abs().max() < 1e-4
    biased = jumps.semigroup_residual(StepBiasedHead(8.0), x, s, t, "two-way")
    assert torch.allclose(biased.abs(), torch.full_like(biased, 8.0 * (t - s) ** 2 / 2), atol=1e-4)
