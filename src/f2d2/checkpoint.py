"""Checkpoints: one file holding model, EMA, optimizer, scheduler, step, RNG states and the run config.

Written atomically; read with ``torch.load(weights_only=True)`` so that a file
carrying arbitrary pickled code is refused instead of executed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .fileio import atomic_path
from .nets import FlowMapNet, build_model

FORMAT = "f2d2-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not an f2d2 checkpoint; the message names the file."""


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (plus the format tag) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint onto the CPU; raise CheckpointError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated, corrupt or unsafe files
        raise CheckpointError(f"checkpoint {path} could not be read safely: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an f2d2 checkpoint (expected format {FORMAT!r})")
    return ckpt


def ema_weights(ckpt: dict) -> dict:
    """The EMA model's state dict, with AveragedModel's ``module.`` prefix removed."""
    return {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k != "n_averaged"}


def load_model(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> FlowMapNet:
    """Rebuild the network recorded in a checkpoint, with its EMA (default) or raw weights, in eval mode."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["config"]["model"])
    state = ema_weights(ckpt) if ema else ckpt["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the architecture it records: {e}") from e
    return model.to(device).eval()
