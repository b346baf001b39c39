"""Failures that stop a job, each with a message saying what happened and what to change."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from contextlib import contextmanager

import torch

# A divergence term beyond this means D or its target is far off the O(1) scale that c should give it.
DIVERGENCE_LIMIT = 1e6


class TrainingError(RuntimeError):
    """Training stopped because its numbers went wrong; the message names the step and what to change."""


class NonFiniteLossError(TrainingError, FloatingPointError):
    """A loss term is NaN or inf."""


class DivergenceHeadError(TrainingError):
    """A divergence-head loss term exploded (beyond DIVERGENCE_LIMIT)."""


class OutOfMemory(RuntimeError):
    """The device ran out of memory; the message says which setting to lower."""


def check_terms(
    terms: dict[str, torch.Tensor | float], step: int, div_scale: float, divergence_terms: Collection[str]
) -> None:
    """Stop on NaN/inf loss terms or an exploding divergence head; ``div_scale`` is the model's c,
    ``divergence_terms`` the terms that regress the head (the objective's ``DIVERGENCE_TERMS``)."""
    values = {k: float(v) for k, v in terms.items()}
    listing = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    exploded = sorted(k for k in divergence_terms if k in values and abs(values[k]) > DIVERGENCE_LIMIT)
    head = [k for k in bad + exploded if k in divergence_terms]
    if head:
        raise DivergenceHeadError(
            f"divergence head output exploded at step {step}: {listing} ({', '.join(head)} beyond "
            f"{DIVERGENCE_LIMIT:g} or not finite). The head learns div v / c with model.div_scale c = {div_scale:g}; "
            "set c near the typical |div v| of the data so that the target is of order 1 (raise c if it is too "
            "small), or lower train.lr or set train.grad_clip."
        )
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {listing}. Lower train.lr, set train.grad_clip, "
            "or check the data for NaN/inf values."
        )


@contextmanager
def explain_out_of_memory(what: str, change: str) -> Iterator[None]:
    """Turn torch's out-of-memory error into OutOfMemory('out of memory <what>; <change>')."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "no details"
        raise OutOfMemory(f"out of memory {what} ({first}); {change}") from None
