"""Analytic 2D distributions: the data end (t = 1) of a flow from N(0, I) noise (t = 0).

Every dataset draws its randomness only from the ``torch.Generator`` passed to
``sample`` and returns float32 points of shape (n, dim) on that generator's device.
"""

from __future__ import annotations

import math

import torch


class DataError(ValueError):
    """A dataset config or data file that cannot be used; the message names the value or file."""


class Dataset2D:
    """Interface: ``dim``, ``has_density``, ``sample(n, generator)`` and ``log_prob(x)``.

    ``has_test_split``: whether the set holds test points apart from those ``sample`` draws
    (``test_points(n, seed)``, a user's point file); an analytic set's test points are fresh draws.
    """

    dim: int = 2
    has_density: bool = True
    has_test_split: bool = False

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n points, shape (n, dim), float32, drawn using only ``generator``."""
        raise NotImplementedError

    def model_defaults(self) -> dict:
        """What the network's config takes from the data."""
        return {"dim": self.dim}

    def log_prob(self, x: torch.Tensor) -> torch.Tensor | None:
        """Log-density in nats of points x (n, dim), shape (n,); None when ``has_density`` is False."""
        raise NotImplementedError

    def _check_points(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (n, {self.dim}), got {tuple(x.shape)}")


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    """log_prob's dtype: that of floating-point points, else float32."""
    return x.dtype if x.is_floating_point() else torch.float32


# Uniform draws within a cell sit at the midpoints of 2**21 equal bins: the float32
# rounding of a point (relative error <= 2**-24, at most 2**-23 of a cell here) then
# never carries it across a cell edge, so every sample has a finite log_prob.
_BINS = 2**21


class Checkerboard(Dataset2D):
    """The flow-matching authors' checkerboard, scaled: 8 squares of side ``scale`` in [-2 scale, 2 scale]^2.

    Their recipe: a ~ U[-2, 2), b ~ U[0, 1) - 2 Bernoulli(1/2) + (floor(a) mod 2), point (a, b) * scale.
    The support is the squares with floor(x / scale) + floor(y / scale) even; the density is
    1 / (8 scale^2) on it (1/32 at the default scale 2).
    """

    def __init__(self, scale: float = 2.0):
        if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise DataError(f"checkerboard scale = {scale!r}; expected a finite number > 0")
        self.scale = float(scale)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        dev = generator.device

        def offset() -> torch.Tensor:
            k = torch.randint(0, _BINS, (n,), generator=generator, device=dev, dtype=torch.float64)
            return (k + 0.5) / _BINS

        col = torch.randint(-2, 2, (n,), generator=generator, device=dev)  # floor(a)
        a = col + offset()
        flip = torch.randint(0, 2, (n,), generator=generator, device=dev)
        b = offset() - 2 * flip + col.remainder(2)
        return (torch.stack([a, b], 1) * self.scale).float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check_points(x)
        cell = torch.floor(x.double() / self.scale)
        on = ((cell >= -2) & (cell <= 1)).all(1) & (cell.sum(1).remainder(2) == 0)
        logp = torch.full(on.shape, -math.log(8 * self.scale**2), dtype=_out_dtype(x), device=x.device)
        return logp.masked_fill(~on, -math.inf)


class GaussianMixture(Dataset2D):
    """Mixture of isotropic 2D Gaussians N(means[k], stds[k]^2 I) with mixing ``weights`` (default uniform).

    means: K rows of length 2; stds: one std for all or K values > 0; weights: K values >= 0 summing to 1.
    """

    def __init__(self, means: list[list[float]], stds: float | list[float], weights: list[float] | None = None):
        try:
            m = torch.as_tensor(means, dtype=torch.float64)
            s = torch.as_tensor(stds, dtype=torch.float64)
            w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise DataError(f"gmm means, stds and weights must be numbers or lists of numbers: {e}") from None
        if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] != self.dim:
            raise DataError(f"gmm means have shape {tuple(m.shape)}; expected a list of K >= 1 points of length 2")
        k = m.shape[0]
        s = s.expand(k).clone() if s.ndim == 0 else s
        if s.shape != (k,) or not bool((s > 0).all() & s.isfinite().all()):
            raise DataError(f"gmm stds = {stds!r}; expected one number > 0 or {k} numbers > 0 (one per mean)")
        if w is None:
            w = torch.full((k,), 1.0 / k, dtype=torch.float64)
        if w.shape != (k,) or not bool((w >= 0).all()) or abs(float(w.sum()) - 1) > 1e-6:
            raise DataError(f"gmm weights = {weights!r}; expected {k} numbers >= 0 (one per mean) summing to 1")
        self.means, self.stds, self.weights = m, s, w

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        dev = generator.device
        comp = torch.multinomial(self.weights.to(dev), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=dev, dtype=torch.float64)
        return (self.means.to(dev)[comp] + self.stds.to(dev)[comp, None] * z).float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check_points(x)
        m, s, w = (t.to(x.device) for t in (self.means, self.stds, self.weights))
        sq = (x.double()[:, None, :] - m).square().sum(-1)  # (n, K)
        comp = -0.5 * sq / s**2 - self.dim * torch.log(s) - 0.5 * self.dim * math.log(2 * math.pi)
        return torch.logsumexp(comp + torch.log(w), dim=1).to(_out_dtype(x))
