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


def warm_start(model: FlowMapNet, path: str | Path) -> None:
    """Load a checkpoint's EMA weights into ``model``; only a divergence head may be missing from the file.

    This is how F2D2 finetuning starts from a velocity-only model: the new head keeps
    its zero initialisation (D = 0) and everything else is copied.
    """
    state = ema_weights(load_checkpoint(path))
    mine = model.state_dict()
    missing = sorted(k for k in mine if k not in state and not k.startswith("d_head."))
    unexpected = sorted(k for k in state if k not in mine)
    mismatched = sorted(k for k in state if k in mine and state[k].shape != mine[k].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"cannot warm start from {path}: missing keys {missing}, unexpected keys {unexpected}, "
            f"shape mismatches {mismatched}; does model.* in the config match the checkpoint's architecture?"
        )
    model.load_state_dict(state, strict=False)


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
