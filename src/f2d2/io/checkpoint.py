"""Checkpoints: one file holding model, EMA, optimizer, scheduler, step, RNG states and the run config.

Written atomically; read with ``torch.load(weights_only=True)`` so that a file
carrying arbitrary pickled code is refused instead of executed. Training keeps the
previous checkpoint beside the current one (``previous_path``) as a fallback.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from f2d2.io.atomic import atomic_path
from f2d2.nets import FlowMapNet, build_model

FORMAT = "f2d2-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not an f2d2 checkpoint; the message names the file."""


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read and an older one is used instead."""


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | Path, payload: dict, *, keep_previous: bool = False) -> None:
    """Write ``payload`` (plus the format tag) to ``path`` atomically.

    With ``keep_previous`` the file being replaced moves to ``previous_path(path)`` once the new one is
    completely written, so that at every moment one of the two holds a complete checkpoint.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: a full disk raises OSError (ENOSPC), reported as DiskFull
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())  # on the disk before the previous checkpoint moves aside
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint onto the CPU; raise CheckpointError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met something other than plain data
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"checkpoint {path} was refused as unsafe: it asks to load {found.group(1)}, a Python object that "
                "could run code; only tensors and plain data are accepted and nothing of the file was run"
            ) from None
        detail = next((part.strip() for part in str(e).split("\n\n")[1:2]), "")
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a checkpoint: the safe loader refused it "
            f"({detail}); nothing of it was run"
        ) from None
    except Exception as e:  # torch raises several types for truncated or corrupt files
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an f2d2 checkpoint (expected format {FORMAT!r})")
    return ckpt


def load_resumable(path: str | Path) -> dict | None:
    """The checkpoint to resume from: ``path``, else (warning why) ``previous_path(path)``; None if neither exists.

    Raises CheckpointError when files exist but none can be read.
    """
    errors = []
    for candidate in (Path(path), previous_path(path)):
        if not candidate.exists():
            continue
        try:
            ckpt = load_checkpoint(candidate)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        for error in errors:
            warnings.warn(
                f"{error}; resuming from {candidate} (step {ckpt['step']}) instead", CheckpointWarning, stacklevel=2
            )
        return ckpt
    if errors:
        raise CheckpointError(
            f"no usable checkpoint to resume from: {'; '.join(errors)}. Delete the workdir's "
            "checkpoint files to train from scratch"
        )
    return None


def ema_weights(ckpt: dict) -> dict:
    """The EMA model's state dict, with AveragedModel's ``module.`` prefix removed."""
    return {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k != "n_averaged"}


def _mismatch(mine: dict, state: dict, optional: str | None = None) -> str | None:
    """'missing keys [...], unexpected keys [...], shape mismatches [...]' between two state dicts, or None.

    Keys of ``mine`` starting with ``optional`` may be missing from ``state``.
    """
    missing = sorted(k for k in mine if k not in state and not (optional and k.startswith(optional)))
    unexpected = sorted(k for k in state if k not in mine)
    mismatched = sorted(k for k in state if k in mine and state[k].shape != mine[k].shape)
    if missing or unexpected or mismatched:
        return f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {mismatched}"
    return None


def warm_start(model: FlowMapNet, path: str | Path) -> None:
    """Load a checkpoint's EMA weights into ``model``; only a divergence head may be missing from the file.

    This is how F2D2 finetuning starts from a velocity-only model: the new head keeps
    its zero initialisation (D = 0) and everything else is copied.
    """
    state = ema_weights(load_checkpoint(path))
    problem = _mismatch(model.state_dict(), state, optional="d_head.")
    if problem:
        raise CheckpointError(
            f"cannot warm start from {path}: {problem}; does model.* in the config match the checkpoint's architecture?"
        )
    model.load_state_dict(state, strict=False)


def load_model(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> FlowMapNet:
    """Rebuild the network recorded in a checkpoint, with its EMA (default) or raw weights, in eval mode."""
    return model_of(load_checkpoint(path), path, ema=ema).to(device).eval()


def model_of(ckpt: dict, path: str | Path, *, ema: bool = True) -> FlowMapNet:
    """The network of a checkpoint read from ``path`` (named in errors), with its EMA or raw weights, on the CPU."""
    model = build_model(ckpt["config"]["model"])
    state = ema_weights(ckpt) if ema else ckpt["model"]
    problem = _mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"checkpoint {path} does not fit the architecture it records: {problem}")
    model.load_state_dict(state)
    return model
