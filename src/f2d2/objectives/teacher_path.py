"""Targets from the teacher's own path: the F2D2 option ``objective.teacher_path``.

The semigroup recursion trains the divergence head D(x, s, t) on its own half steps only; a head trained so
misses each photo's mean divergence by 0.1-0.4 bits/dim on 8x8 patches, even on the photos it was trained on
(docs/ood.md). This option adds targets read off the teacher's path. Once per run, the teacher's joint ODE
(``f2d2.core.likelihood.solve_joint_ode``; dopri5 at atol = rtol = ``tol``, the objective's ``div_method``) is
solved from ``points`` training points at t = 1 (the data; images dequantized) down to t = 0 (noise), cut into
``grid`` equal segments: :class:`TeacherPath` keeps the states x(t_k), t_k = 1 - k / grid, and each segment's
mean divergence. Each training step, ``rows`` rows draw a point, a step size h = 2^-j (j = 0..log2 grid, alike)
and a start t_a on the grid (t_b = t_a - h >= 0), and

    L_path = || D(x(t_a), t_a, t_b) - mean_[t_b, t_a] div v / c ||^2      (a step backward, from the data side)

is added to the loss as lam * weight * L_path; for a forward-only objective (two_way false) the rows step
forward, D(x(t_b), t_b, t_a), with the same target. The head must learn the teacher's divergence
(``div_source: teacher``). With ``jitter`` (images only) the path also starts from ``jitter.points``
photometrically jittered training images (:mod:`f2d2.data.jitter`), so that the head meets the teacher on inputs
around the training images too. The training loop solves the path, or reads it back from the run's folder
(``f2d2.training.path_cache``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from f2d2.config.options import Option
from f2d2.core.likelihood import solve_joint_ode, time_grid
from f2d2.data.jitter import RANGES, SETTINGS
from f2d2.nets import FlowMapNet

SOLVE_BATCH = 500  # points per solve

OPTION = Option(
    "teacher_path",
    None,
    {
        "type": ["object", "null"],
        "additionalProperties": False,
        "required": ["points", "grid", "rows", "weight", "tol"],
        "properties": {
            "points": {"type": "integer", "minimum": 1, "description": "training points whose path is solved"},
            "grid": {"enum": [1, 2, 4, 8, 16, 32, 64], "description": "segments of [0, 1]: finest step 1 / grid"},
            "rows": {"type": "integer", "minimum": 1, "description": "path rows per training step"},
            "weight": {"type": "number", "exclusiveMinimum": 0, "description": "the term's weight, times lam"},
            "tol": {"type": "number", "exclusiveMinimum": 0, "description": "dopri5 atol = rtol of the solve"},
            "jitter": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "required": ["points", *SETTINGS],
                "description": "images only: `points` more path points, jittered training images "
                "(f2d2.data.jitter); null (the default): none",
                "properties": {
                    "points": {"type": "integer", "minimum": 1, "description": "jittered images added"},
                    **{
                        key: {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 2, "maxItems": 2}
                        for key in RANGES
                    },
                    "noise": {"type": "number", "minimum": 0, "description": "largest noise sd, 8-bit levels"},
                    "flat": {"type": "number", "minimum": 0, "maximum": 1, "description": "share made flat"},
                },
            },
        },
    },
    "targets for the head from the teacher's dopri5 path (atol = rtol = tol) of `points` training points (and, "
    "images only, `jitter.points` jittered ones), cut in `grid` segments; `rows` rows per step weighted `weight` x "
    "lam (f2d2.objectives.teacher_path); null: off",
    only={"f2d2": True},
)


@dataclass
class TeacherPath:
    """``x`` (grid + 1, N, *shape): the states x(t_k) at t_k = 1 - k / grid (k = 0: the data points);
    ``div`` (grid, N): the teacher's mean divergence over segment k, [t_{k+1}, t_k]; ``key``: what it was
    solved from (teacher weights, points, grid, tol, divergence, seed); ``summed`` (grid + 1, N): the running
    sum of ``div`` from t = 1 (0 first), computed once, from which every step's target is a difference."""

    x: torch.Tensor
    div: torch.Tensor
    key: dict
    summed: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.summed = torch.cat([torch.zeros_like(self.div[:1]), self.div.cumsum(0)])

    @property
    def grid(self) -> int:
        return self.div.shape[0]

    def to(self, device: torch.device) -> TeacherPath:
        return TeacherPath(self.x.to(device), self.div.to(device), self.key)


def solve(
    teacher: FlowMapNet, x1: torch.Tensor, grid: int, *, tol: float, div: str, generator: torch.Generator, key: dict
) -> TeacherPath:
    """The teacher's path from the points x1 (N, *shape) at t = 1 down to t = 0, cut into ``grid`` segments."""
    states, means = [x1], []
    x = x1
    with torch.no_grad():
        times = time_grid(grid)
        for s, t in zip(times, times[1:]):
            parts = [
                solve_joint_ode(teacher, chunk, s, t, atol=tol, rtol=tol, div=div, generator=generator)
                for chunk in x.split(SOLVE_BATCH)
            ]
            x = torch.cat([p[0] for p in parts])
            states.append(x)
            means.append(torch.cat([p[1] for p in parts]) / (t - s))  # integral_s^t div dt over t - s < 0
    return TeacherPath(torch.stack(states).cpu(), torch.stack(means).float().cpu(), key)


def path_loss(model: FlowMapNet, path: TeacherPath, rows: int, generator: torch.Generator, *, backward: bool):
    """L_path on ``rows`` rows drawn with ``generator`` (the path on the generator's device): a scalar."""
    device = generator.device
    grid, n = path.grid, path.x.shape[1]
    j = torch.randint(0, int(math.log2(grid)) + 1, (rows,), generator=generator, device=device)
    span = grid // 2**j  # segments per step
    start = (torch.rand(rows, generator=generator, device=device) * 2**j).long() * span  # index of t_a
    point = torch.randint(0, n, (rows,), generator=generator, device=device)
    target = (path.summed[start + span, point] - path.summed[start, point]) / span / model.div_scale
    t_a, t_b = 1 - start / grid, 1 - (start + span) / grid
    if backward:
        out = model(path.x[start, point], t_a.float(), t_b.float())
    else:
        out = model(path.x[start + span, point], t_b.float(), t_a.float())
    return (out.d - target).pow(2).mean()
