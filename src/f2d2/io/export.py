"""Shareable models: a folder of ``model.safetensors`` (the weights) and ``config.json`` (how to rebuild the network).

Neither file is a pickle: a shared model loads without running any of its sender's code. ``config.json`` holds
the checkpoint's ``model`` section with every default spelled out (what :func:`f2d2.nets.build_model` takes, so a
later change of a default does not change a shared model), the network's ``data_shape`` and the provenance (f2d2
version, the run's seed, step, objective and data set, which weights).
"""

from __future__ import annotations

import inspect
import json
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from f2d2.io.atomic import atomic_path, atomic_write_text
from f2d2.io.checkpoint import CheckpointError, _mismatch, load_checkpoint, model_of
from f2d2.nets import ARCHITECTURES, FlowMapNet, build_model

FORMAT = "f2d2-export/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def export_model(checkpoint: str | Path, out: str | Path, *, ema: bool = True) -> Path:
    """Write a checkpoint's EMA (default) or raw weights and its network's config into the folder ``out``.

    ``out`` is created if absent; the two files are each written atomically (the weights first). The weights
    are float32, contiguous and unshared (a tied tensor is stored under each of its names).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"export folder {out} is a file; expected a folder (new or existing) for {WEIGHTS}, {CONFIG}")
    ckpt = load_checkpoint(checkpoint)
    model = model_of(ckpt, checkpoint, ema=ema)
    tensors = {
        k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
        for k, v in model.state_dict().items()
    }
    run = ckpt["config"]
    config = {
        "format": FORMAT,
        "model": full_model_config(run["model"]),
        "data_shape": list(model.data_shape),
        "provenance": {
            "f2d2_version": version("f2d2"),
            "seed": run.get("seed"),
            "step": ckpt.get("step"),
            "objective": run.get("objective", {}).get("name"),
            "data": run.get("data", {}).get("name"),
            "weights": "ema" if ema else "raw",
            "checkpoint": str(checkpoint),
        },
    }
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    atomic_write_text(out / CONFIG, json.dumps(config, indent=1) + "\n")
    return out


def full_model_config(cfg: dict) -> dict:
    """A model section with every argument of its architecture's constructor, defaults included."""
    arch = cfg.get("arch", "mlp")
    params = inspect.signature(ARCHITECTURES[arch]).parameters.values()
    defaults = {p.name: list(p.default) if isinstance(p.default, tuple) else p.default for p in params}
    defaults = {k: v for k, v in defaults.items() if v is not inspect.Parameter.empty}
    return {"arch": arch, **defaults, **cfg}


def read_config(folder: str | Path) -> dict:
    """The ``config.json`` of an exported model; CheckpointError naming the file if it is missing or not one."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path} not found; an exported model is a folder holding {CONFIG} and {WEIGHTS}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an f2d2 export config (expected format {FORMAT!r})")
    return config


def load_export(folder: str | Path, device: str | torch.device = "cpu") -> FlowMapNet:
    """Rebuild an exported model (:func:`export_model`) on ``device``, in eval mode.

    Raises CheckpointError naming the missing or unreadable file, or the keys in which ``config.json``'s network
    and the weights disagree (missing, unexpected, shape mismatches).
    """
    folder = Path(folder)
    config = read_config(folder)
    try:
        model = build_model(config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG}: its model section does not build a network ({e})") from None
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found; an exported model is a folder holding {CONFIG} and {WEIGHTS}")
    try:
        state = load_file(weights)
    except Exception as e:  # SafetensorError for a bad header; others for truncated data
        raise CheckpointError(f"{weights} is truncated or not a safetensors file ({e})") from None
    problem = _mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{folder / CONFIG} does not fit {weights}: {problem}")
    if list(model.data_shape) != config.get("data_shape"):
        raise CheckpointError(
            f"{folder / CONFIG}: data_shape = {config.get('data_shape')!r}, but its model section builds a "
            f"network of data_shape {list(model.data_shape)}"
        )
    model.load_state_dict(state)
    return model.to(device).eval()
