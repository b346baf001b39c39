"""bench/head_fit.py: the exact joint flow map's head matches its own divergence at the interpolant's points and
along its own paths (those of the exact map's jumps from the data); a head off by a known amount per unit time is
reported off by exactly that, with its sign; a head that shrinks each point's divergence towards their mean has
that shrinkage as its slope."""

from __future__ import annotations

import torch

from analytic import GaussianFlow
from f2d2.nets import FlowMapNet, FlowMapOutput
from pipeline_helpers import load_bench

head_fit = load_bench("head_fit")
MU, SIGMA, C = [0.5, -1.0], 0.3, 7.0


class ShiftedHead(GaussianFlow):
    """The exact flow map with ``delta`` nats per unit time added to its average divergence."""

    def __init__(self, delta: float):
        super().__init__(MU, SIGMA, flow_map=True, div_scale=C)
        self.delta = delta

    def forward(self, x, s, t):
        out = super().forward(x, s, t)
        return FlowMapOutput(out.u, out.d + self.delta / self.div_scale)


def test_exact_head_has_no_error_and_a_shifted_head_is_off_by_its_shift_at_both_kinds_of_points():
    x1 = torch.tensor(MU) + SIGMA * torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    times = [1.0, 0.9, 0.5, 0.2]
    exact = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=C)
    for where, rows in head_fit.head_fit(exact, x1, times, 1e-6, 0).items():
        assert [r["t"] for r in rows] == times, where
        for r in rows:
            want = 2 * float(exact.rate(torch.tensor(r["t"])))
            assert abs(r["div_mean"] - want) < 1e-3 and abs(r["err_mean"]) < 1e-3, (where, r)
    for t, x in head_fit.own_path(exact, x1, times, 1e-6).items():  # the exact map's jumps from the data
        ones = torch.ones(len(x1))
        assert torch.allclose(x, x1 + (t - 1) * exact(x1, ones, t * ones).u, atol=1e-4), t
    for where, rows in head_fit.head_fit(ShiftedHead(-5.0), x1, times, 1e-6, 0).items():
        for r in rows:
            assert abs(r["err_mean"] + 5.0) < 1e-3 and abs(r["err_rms"] - 5.0) < 1e-3, (where, r)
            assert abs(r["err_share"] - (-5.0) / r["div_mean"]) < 1e-6


def test_against_another_velocity_the_error_is_the_difference_of_the_two_divergences():
    x1 = torch.tensor(MU) + SIGMA * torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    model = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=C)
    teacher = GaussianFlow(MU, 0.6, flow_map=False)
    for where, rows in head_fit.head_fit(model, x1, [0.9, 0.5], 1e-6, 0, ode=teacher).items():
        for r in rows:
            t = torch.tensor(r["t"])
            assert abs(r["div_mean"] - 2 * float(teacher.rate(t))) < 1e-3, (where, r)
            assert abs(r["err_mean"] - 2 * float(model.rate(t) - teacher.rate(t))) < 1e-3, (where, r)


class ShrunkCubic(FlowMapNet):
    """v(x, t) = x |x|^2 / 2 in 2D (divergence 2 |x|^2, different at every point; its paths contract towards 0
    backward from the data), with a head that predicts ``shrink`` times that divergence plus ``shift``."""

    def __init__(self, shrink: float, shift: float):
        super().__init__(div_scale=C, flow_map=True)
        self.shrink, self.shift = shrink, shift
        self.data_shape = (2,)
        self.has_div_head = True

    def forward(self, x, s, t):
        div = 2 * x.pow(2).sum(1)
        return FlowMapOutput(0.5 * x * x.pow(2).sum(1, keepdim=True), (self.shrink * div + self.shift) / C)


def test_a_head_that_shrinks_the_divergence_has_that_slope_at_both_kinds_of_points():
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    for shrink in (1.0, 0.7):
        for where, rows in head_fit.head_fit(ShrunkCubic(shrink, 3.0), x1, [1.0, 0.8], 1e-6, 0).items():
            for r in rows:
                assert r["div_sd"] > 0.1 and abs(r["slope"] - shrink) < 1e-4, (where, r)
                assert abs(r["corr"] - 1) < 1e-6, (where, r)  # shrunk, not scattered
    (row,) = head_fit.head_fit(GaussianFlow(MU, SIGMA, div_scale=C), x1, [0.5], 1e-6, 0)["interpolant"]
    assert row["slope"] is None  # the same divergence at every point: no slope to fit
