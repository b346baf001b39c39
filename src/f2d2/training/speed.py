"""Training speed settings: ``train.precision``, ``train.compile`` and ``train.data_on_device``.

- ``precision: bfloat16`` runs each objective's forward passes (model and teacher, divergence targets
  included) under ``torch.autocast(device, bfloat16)``; the backward pass and the optimizer stay in
  float32 (the parameters are float32 throughout). MeanFlow's JVP is taken with autocast off, as the
  official MeanFlow code does: ``torch.func.jvp`` of the U-Net fails under autocast (PyTorch 2.14:
  "Input type (float) and weight type (bfloat16) should be the same"), so MeanFlow gains only in its
  teacher's calls. The networks' outputs are cast back to float32 (a forward hook), so every regression
  target and loss is float32; only the matmuls and convolutions inside run in bfloat16.
  CUDA only: :func:`speed_problems` refuses it on a CPU device.
- ``compile: true`` compiles the trained network's forward in place (``nn.Module.compile``: the
  checkpoint's keys do not change, ``model.velocity`` and ``model(x, s, t)`` both use it) and the
  objective's frozen teacher. Not the network of a MeanFlow objective: every call of it sits inside
  ``torch.func.jvp``, which TorchDynamo cannot trace through a compiled function called from eager
  code (pytorch#128711), so it would graph-break back to eager after compiling for nothing.
  Needs a working compiler backend: Triton on CUDA, a C++ compiler on CPU (:func:`compiler_problem`).
- ``data_on_device: true`` keeps the uint8 training images on the training device, so a batch is
  indexed there (no host-to-device copy per step); the same images as without it, bit for bit. 2D data
  is generated on the device anyway.

Defaults (float32, no compile, data on the host) leave a run exactly as before these keys existed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil

import torch

from f2d2.nets import FlowMapNet, FlowMapOutput


def autocast(precision: str, device: torch.device):
    """The context an objective's forward passes run in: bfloat16 autocast, or nothing for float32."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def setup(tr: dict, data, model: FlowMapNet, objective, device: torch.device) -> list[str]:
    """Apply a run's ``train`` speed keys to its data, network and objective (in place) before the first step;
    returns notes for the log. ``precision`` also needs :func:`autocast` around each objective call."""
    from f2d2.data import ImageDataset

    notes = []
    if tr["data_on_device"] and isinstance(data, ImageDataset):
        data.keep_on_device(device)
    if tr["precision"] == "bfloat16":
        for net in (model, getattr(objective, "teacher", None)):
            if isinstance(net, FlowMapNet):
                net.register_forward_hook(_float32_outputs)
    if tr["compile"]:
        notes.append("train.compile: " + "; ".join(compile_for_training(model, objective)))
    return notes


def _float32_outputs(module: FlowMapNet, args, out: FlowMapOutput) -> FlowMapOutput:
    """Forward hook: the network's outputs in float32 under autocast, so that targets and losses are float32."""
    return FlowMapOutput(out.u.float(), None if out.d is None else out.d.float())


def compile_for_training(model: FlowMapNet, objective) -> list[str]:
    """Compile ``model``'s forward (unless the objective takes its JVP: ``uses_jvp``) and the objective's
    teacher, in place; returns what was compiled and what was not, one phrase each, for the log."""
    done = []
    if objective.uses_jvp:
        done.append(
            f"model not compiled ({type(objective).__name__} calls it inside torch.func.jvp, which cannot trace a "
            "compiled module; pytorch#128711)"
        )
    else:
        model.compile()
        done.append("model compiled")
    teacher = getattr(objective, "teacher", None)
    if isinstance(teacher, torch.nn.Module):
        teacher.compile()
        done.append("teacher compiled")
    return done


def compiler_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` (inductor) cannot build kernels for ``device`` on this machine, or None."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA needs Triton, which is not installed (pip install triton)"
        return None
    from torch._inductor import config as inductor_config

    cxx = inductor_config.cpp.cxx
    names = [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c]
    if not any(shutil.which(c) for c in names):
        return (
            f"torch.compile on CPU needs a C++ compiler ({' or '.join(map(str, names))}), and none is on PATH "
            "(install g++, or set CXX)"
        )
    return None


def speed_problems(train: dict) -> list[str]:
    """Config rules of the speed keys of a resolved run's ``train`` section (no hardware looked at)."""
    device = str(train.get("device"))
    if train.get("precision") == "bfloat16" and not device.startswith("cuda"):
        return [
            f"train.precision = 'bfloat16' with train.device = {device!r}: bfloat16 autocast is a CUDA "
            "setting (on a CPU it is slower than float32 and untested here); use train.precision: float32 "
            "or a CUDA device"
        ]
    return []
