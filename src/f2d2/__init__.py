"""f2d2: fast flow joint distillation.

Few-step sampling and few-step log-likelihood from one flow-map network.
Time runs from t = 0 (noise, x0 ~ N(0, I)) to t = 1 (data) everywhere.

``f2d2.log_prob`` / ``f2d2.bits_per_dim`` (:mod:`f2d2.api`) score data under any f2d2 model or
checkpoint, ``f2d2.sample`` draws from one (with each sample's log-density if asked); ``f2d2.load``
rebuilds one from a checkpoint or an ``f2d2 export`` folder;
``f2d2.ExternalVelocity`` / ``f2d2.load_teacher_spec`` (:mod:`f2d2.io.teacher`) turn a velocity model of
your own into a teacher. They load on first use, so ``import f2d2`` stays free of torch.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "log_prob": "f2d2.api",
    "bits_per_dim": "f2d2.api",
    "load": "f2d2.api",
    "sample": "f2d2.api",
    "ExternalVelocity": "f2d2.nets.external",
    "load_teacher_spec": "f2d2.io.teacher",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'f2d2' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["ExternalVelocity", "bits_per_dim", "load", "load_teacher_spec", "log_prob", "sample"]
