"""The EMA of the weights: a half-life in steps (with an EDM-style ramp-up) against its closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from f2d2.config.resolve import TRAIN_DEFAULTS
from f2d2.training.ema import decay_at, multi_avg_fn, start_share


def _tr(**keys) -> dict:
    return {**TRAIN_DEFAULTS, **keys}


def _ema_of(values: list[float], tr: dict) -> float:
    """The EMA of a one-parameter model whose parameter is ``values[s - 1]`` at update s."""
    model = torch.nn.Linear(1, 1, bias=False).double()
    ema = AveragedModel(model, multi_avg_fn=multi_avg_fn(tr), use_buffers=True)
    for v in values:
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update_parameters(model)
    return ema.module.weight.item()


def _closed_form(values: list[float], halflife: float, ramp: float | None) -> float:
    """sum_k w_k values[k - 1]: w_1 = prod_{s=2..n} b_s, w_k = (1 - b_k) prod_{s>k} b_s, b_s = 0.5 ** (1 / h_s)."""
    n = len(values)
    b = [0.5 ** (1 / (halflife if ramp is None else min(halflife, ramp * s))) for s in range(1, n + 1)]
    tail = [math.prod(b[k + 1 :]) for k in range(n)]
    return values[0] * tail[0] + sum((1 - b[k]) * tail[k] * values[k] for k in range(1, n))


@pytest.mark.parametrize("halflife, ramp", [(7.0, None), (7.0, 0.5), (3.0, 0.05)])
def test_half_life_ema_matches_its_closed_form(halflife, ramp):
    tr = _tr(ema_halflife_steps=halflife, ema_rampup=ramp)
    values = [math.sin(s) + 0.1 * s for s in range(1, 41)]
    assert _ema_of(values, tr) == pytest.approx(_closed_form(values, halflife, ramp), rel=1e-12, abs=1e-12)
    # The weight of update 1 is what the start-up check reports as the share of the warm start.
    assert _ema_of([1.0] + [0.0] * 39, tr) == pytest.approx(start_share(tr, 40), rel=1e-9, abs=1e-300)


def test_half_life_halves_the_weight_of_the_start():
    tr = _tr(ema_halflife_steps=10)
    assert start_share(tr, 11) == pytest.approx(0.5) and start_share(tr, 21) == pytest.approx(0.25)
    assert decay_at(1, tr) == decay_at(10**6, tr) == pytest.approx(0.5**0.1)
    ramped = _tr(ema_halflife_steps=10, ema_rampup=0.5)
    assert decay_at(4, ramped) == pytest.approx(0.5**0.5) and decay_at(40, ramped) == decay_at(20, ramped)
    assert start_share(ramped, 10**6) == 0.0  # without a loop over a million updates


def test_constant_decay_is_torch_ema():
    tr = _tr(ema_decay=0.9)
    values = [float(s) for s in range(1, 21)]
    expected = values[0]
    for v in values[1:]:
        expected = 0.9 * expected + 0.1 * v
    assert _ema_of(values, tr) == pytest.approx(expected, rel=1e-12)
    assert start_share(tr, 20) == pytest.approx(0.9**19)
