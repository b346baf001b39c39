"""Bits per dimension with uniform dequantization, on cases with a known answer."""

from __future__ import annotations

import math

import torch

from analytic import GaussianFlow
from f2d2.core.likelihood import log_likelihood
from f2d2.eval.bpd import bits_per_dim, dequantize, pixel_nll


def test_uniform_model_on_uniform_pixels_is_eight_bits():
    """A model density uniform on [-1, 1]^d, i.e. p_z = 2^-d, gives 256^-d per pixel vector: 8 bits."""
    d = 12
    log_pz = torch.full((5,), -d * math.log(2), dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(pixel_nll(log_pz, d), d), torch.full((5,), 8.0, dtype=torch.float64))


def test_dequantize_fills_each_pixel_bin():
    pixels = torch.tensor([[0, 255, 100]], dtype=torch.uint8).expand(20000, 3)
    z = dequantize(pixels, torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() < 1
    y = (z + 1) / 2 * 256  # back to [x, x + 1)
    assert bool(((y >= pixels.float()) & (y < pixels.float() + 1)).all())
    torch.testing.assert_close(y.mean(0), pixels[0].float() + 0.5, atol=0.01, rtol=0)


def test_gaussian_flow_on_uniform_pixels_matches_closed_form():
    """Dequantization, the flow likelihood and the BPD formula together, against a closed form.

    Pixels uniform on {0..255}^d make z uniform on [-1, 1]^d; a model N(0, sigma^2 I) then has
    E[-log p_z] = d (log(2 pi sigma^2) / 2 + 1 / (6 sigma^2)) (E[z^2] = 1/3), so
    BPD = (log(2 pi sigma^2) / 2 + 1 / (6 sigma^2)) / log 2 + 7.
    """
    sigma, d, n = 0.8, 4, 20000
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, d), generator=g, dtype=torch.uint8)
    model = GaussianFlow(torch.zeros(d), sigma)  # the exact flow map: one step is exact
    res = log_likelihood(model, dequantize(pixels, g), 1, div="head")
    bpd = bits_per_dim(pixel_nll(res.log_prob.double(), d), d).mean()
    expected = (0.5 * math.log(2 * math.pi * sigma**2) + 1 / (6 * sigma**2)) / math.log(2) + 7
    assert abs(float(bpd) - expected) < 0.01
