"""The Frechet distance of sample features to reference statistics, exact and fast enough to bootstrap.

FID = |mu - mu_r|^2 + tr S + tr S_r - 2 tr (S S_r)^(1/2), with S the sample covariance of n features (n, F).
With A the centred features and S_r = L L^T, the nonzero eigenvalues of S S_r = A^T A S_r / (n - 1) are those of
the n x n matrix (A L)(A L)^T / (n - 1): the trace term comes from one symmetric n x n eigen-solve instead of a
matrix square root of F x F (F = 2048 for Inception). Same value as clean-fid's ``frechet_distance`` (scipy
``sqrtm``), to rounding; L is computed once per reference, so a bootstrap replicate costs one (n, F) x (F, n)
product and one n x n ``eigvalsh``.
"""

from __future__ import annotations

import numpy as np


class FrechetReference:
    """Reference statistics mu (F,) and sigma (F, F), with sigma's square-root factor L (sigma = L L^T)."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray):
        self.mu = np.asarray(mu, dtype=np.float64)
        self.sigma = np.asarray(sigma, dtype=np.float64)
        if self.mu.ndim != 1 or self.sigma.shape != (len(self.mu), len(self.mu)):
            raise ValueError(f"reference statistics: mu (F,) and sigma (F, F) expected; got {mu.shape}, {sigma.shape}")
        w, v = np.linalg.eigh((self.sigma + self.sigma.T) / 2)
        self.factor = v * np.sqrt(np.clip(w, 0, None))
        self.trace = float(np.trace(self.sigma))

    @classmethod
    def of_features(cls, feats: np.ndarray) -> FrechetReference:
        """Reference statistics of features (n, F)."""
        feats = np.asarray(feats, dtype=np.float64)
        return cls(feats.mean(0), np.cov(feats, rowvar=False))


class FrechetSamples:
    """Features (n, F) of one set of samples, projected once on a reference's factor, for FID and its bootstrap."""

    def __init__(self, feats: np.ndarray, ref: FrechetReference):
        self.feats = np.asarray(feats, dtype=np.float64)
        if self.feats.ndim != 2 or self.feats.shape[1] != len(ref.mu) or len(self.feats) < 2:
            raise ValueError(f"features (n >= 2, {len(ref.mu)}) expected for this reference; got {self.feats.shape}")
        self.ref = ref
        self.proj = self.feats @ ref.factor  # (n, F)

    def fid(self, idx: np.ndarray | None = None) -> float:
        """FID of the samples (or of the resample ``idx``, (n,) indices with repeats) to the reference."""
        f = self.feats if idx is None else self.feats[idx]
        p = self.proj if idx is None else self.proj[idx]
        n = len(f)
        a, g = f - f.mean(0), p - p.mean(0)
        eig = np.linalg.eigvalsh(g @ g.T / (n - 1))
        mean_term = float(np.sum((f.mean(0) - self.ref.mu) ** 2))
        return (
            mean_term
            + float(np.sum(a * a)) / (n - 1)
            + self.ref.trace
            - 2 * float(np.sqrt(np.clip(eig, 0, None)).sum())
        )


def bootstrap_indices(n: int, reps: int, seed: int) -> np.ndarray:
    """(reps, n) resampling indices with repeats; the same seed gives the same draws (paired comparisons)."""
    return np.random.default_rng(seed).integers(0, n, size=(reps, n))


def bootstrap(samples: FrechetSamples, indices: np.ndarray) -> np.ndarray:
    """FIDs (reps,) of the resamples ``indices`` (reps, n) of ``samples``."""
    return np.array([samples.fid(idx) for idx in indices])


def interval(point: float, replicates: np.ndarray) -> dict:
    """A 95% interval around ``point`` from bootstrap replicates: point -/+ 1.96 of their standard deviation.

    The spread, not the percentiles: a resample repeats images, which raises its FID, so the replicates sit above
    the point estimate while their spread still measures the sampling noise."""
    sd = float(np.std(replicates, ddof=1))
    return {"sd": sd, "lo": point - 1.96 * sd, "hi": point + 1.96 * sd, "reps": len(replicates)}
