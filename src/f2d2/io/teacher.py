"""Teachers from files: an f2d2 checkpoint, or an outside velocity model given as a factory import path
and a state-dict file (the config form of :class:`f2d2.nets.external.ExternalVelocity`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from f2d2.config.validate import ConfigError, problems
from f2d2.io.checkpoint import _mismatch, load_model
from f2d2.nets import FlowMapNet
from f2d2.nets.external import ExternalVelocity


def import_factory(path: str, key: str = "objective.teacher.factory") -> Callable[..., object]:
    """The callable named by ``"package.module:function"`` (``function`` may be dotted, e.g. ``Class.build``);
    ``key``: the setting that gave it, as the errors name it."""
    expected = "expected 'package.module:function', an importable module and a callable in it"
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise ValueError(f"{key} = {path!r}; {expected}")
    module_name, attr = path.split(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(
            f"{key} = {path!r}: no module named {e.name!r} (is it installed or on PYTHONPATH?); {expected}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{key} = {path!r}: {module_name!r} has no attribute {attr!r}; {expected}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{key} = {path!r} is a {type(obj).__name__}, not callable; {expected}")
    return obj


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict (names -> tensors) onto the CPU: a ``.safetensors`` file, else read with
    ``torch.load(weights_only=True)``."""
    key = "objective.teacher.state_dict"
    if not Path(path).is_file():
        raise ValueError(f"{key} = {str(path)!r} is not an existing file (relative paths start from {Path.cwd()})")
    safetensors = Path(path).suffix == ".safetensors"
    try:
        state = load_file(path) if safetensors else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # refused by the safe unpickler, truncated or not a torch / safetensors file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        how = "safetensors.torch.save_file" if safetensors else "torch.save"
        raise ValueError(
            f"{key} = {str(path)!r} could not be read as tensors only ({first}); save it with "
            f"{how}(model.state_dict(), path); nothing of the file was run"
        ) from None
    if not (isinstance(state, Mapping) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ValueError(
            f"{key} = {str(path)!r} holds a {type(state).__name__}, not a state dict; expected "
            "torch.save(model.state_dict(), path)"
        )
    return dict(state)


def load_teacher_spec(spec: Mapping, device: torch.device | str = "cpu") -> ExternalVelocity:
    """A frozen ``ExternalVelocity`` (eval mode) from the config form of an outside teacher::

        {factory: "pkg.mod:fn", state_dict: "weights.pt" | "weights.safetensors", data_shape: [2],
         time: "noise_to_data" | "data_to_noise", output: "velocity" | "denoiser", kwargs: {...}}

    ``fn(**kwargs)`` must return the ``nn.Module`` whose state dict the file holds (every key, same
    shapes). The weights are read as tensors only (safetensors, or ``weights_only=True``): the factory is the
    only code that runs.
    """
    found = problems(spec, "outside_teacher", prefix="objective.teacher")
    if found:  # one line, as the other errors of this module
        raise ConfigError("; ".join(found))
    kwargs = spec.get("kwargs") or {}
    factory = import_factory(spec["factory"])
    net = factory(**kwargs)
    if not isinstance(net, nn.Module):
        raise ValueError(
            f"objective.teacher.factory = {spec['factory']!r} returned a {type(net).__name__}; "
            "expected a torch.nn.Module to load objective.teacher.state_dict into"
        )
    state = load_state_dict_file(spec["state_dict"])
    problem = _mismatch(net.state_dict(), state)
    if problem:
        raise ValueError(
            f"objective.teacher.state_dict = {str(spec['state_dict'])!r} does not fit the module of "
            f"objective.teacher.factory = {spec['factory']!r}: {problem}"
        )
    net.load_state_dict(state)
    teacher = ExternalVelocity(
        net, spec["data_shape"], time=spec.get("time", "noise_to_data"), output=spec.get("output", "velocity")
    )
    return teacher.to(device).eval().requires_grad_(False)


def load_teacher(source: str | Mapping, device: torch.device | str = "cpu") -> FlowMapNet:
    """The frozen teacher that ``objective.teacher`` names: an f2d2 checkpoint path (its EMA weights) or an
    outside model's spec (:func:`load_teacher_spec`)."""
    if isinstance(source, Mapping):
        return load_teacher_spec(source, device)
    return load_model(source, ema=True, device=device).requires_grad_(False)
