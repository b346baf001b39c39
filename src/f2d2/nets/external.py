"""A velocity model from outside f2d2 as a teacher: ``ExternalVelocity`` (its config form loads through
:func:`f2d2.io.teacher.load_teacher_spec`).

The objectives ask a teacher only for ``velocity(x, t)`` (x (B, *data_shape), t (B,), f2d2's time:
t = 0 noise, t = 1 data) and its divergence by autograd in x. ``ExternalVelocity`` gives any
``torch.nn.Module`` or callable ``fn(x, t)`` that interface, converting its time convention and output:

- ``time="noise_to_data"``: fn's t = 0 is noise, as in f2d2 and the ``flow_matching`` package;
  ``"data_to_noise"``: fn's t = 0 is data (official MeanFlow, many rectified-flow codes), so
  f2d2 asks fn at 1 - t and a velocity changes sign: v(x, t) = -fn(x, 1 - t).
- ``output="velocity"``: fn returns dx/dt; ``"denoiser"``: fn returns its estimate of the data point,
  E[x1 | x_t], and on the linear path x_t = (1 - t) x0 + t x1 the velocity is (fn - x) / (1 - t),
  with 1 - t held at least ``min_gap`` (the denoiser form is singular at the data end).

fn receives x (B, *data_shape) and t (B,) of x's dtype and device and must return a tensor of x's
shape. The result is a velocity-only network (``flow_map = False``, no divergence head): it serves as
the teacher of Shortcut-Distill(-F2D2) and MeanFlow-F2D2, and ``f2d2.log_prob`` integrates it with
Euler steps or the adaptive reference. The student stays one of f2d2's own backbones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from f2d2.nets.base import FlowMapNet, FlowMapOutput

TIME_CONVENTIONS = ("noise_to_data", "data_to_noise")
OUTPUTS = ("velocity", "denoiser")


class ExternalVelocity(FlowMapNet):
    """``fn(x, t)`` as an f2d2 velocity model: ``velocity(x, t)`` with x (B, *data_shape), t (B,), t = 0 noise.

    An ``nn.Module`` fn becomes a submodule (``.to``, ``requires_grad_``, ``eval`` reach it); a plain
    callable is used as it is. ``forward(x, s, t)`` is the Euler step's FlowMapOutput(v(x, s), None).
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        data_shape: tuple[int, ...] | list[int],
        *,
        time: str = "noise_to_data",
        output: str = "velocity",
        min_gap: float = 1e-3,
    ):
        super().__init__(flow_map=False)
        if not callable(fn):
            raise ValueError(f"teacher fn = {fn!r}; expected a torch.nn.Module or a callable fn(x, t)")
        if time not in TIME_CONVENTIONS:
            raise ValueError(f"teacher time = {time!r}; expected one of {list(TIME_CONVENTIONS)} (which end t = 0 is)")
        if output not in OUTPUTS:
            raise ValueError(f"teacher output = {output!r}; expected one of {list(OUTPUTS)}")
        shape = tuple(data_shape) if isinstance(data_shape, (tuple, list)) else None
        if not shape or not all(isinstance(n, int) and n >= 1 for n in shape):
            raise ValueError(
                f"teacher data_shape = {data_shape!r}; expected a list of positive integers, e.g. [2] or [3, 32, 32]"
            )
        if not 0 < min_gap < 1:
            raise ValueError(f"teacher min_gap = {min_gap!r}; expected a number in (0, 1)")
        self.fn = fn
        self.data_shape, self.time, self.output, self.min_gap = shape, time, output, float(min_gap)

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """dx/dt at (x, t) in f2d2's time (t = 0 noise): x (B, *data_shape), t (B,) -> (B, *data_shape)."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"teacher input x has shape {tuple(x.shape)}; expected (B, *data_shape) = "
                f"(B, {', '.join(map(str, self.data_shape))})"
            )
        t = t.to(x.dtype).expand(x.shape[0])
        flip = self.time == "data_to_noise"
        out = self.fn(x, 1 - t if flip else t)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"teacher returned {got} for x of shape {tuple(x.shape)}; expected a tensor of x's shape "
                f"(a {self.output} per point)"
            )
        if self.output == "denoiser":  # the data estimate does not depend on the time direction
            gap = (1 - t).clamp(min=self.min_gap).reshape(-1, *([1] * (x.dim() - 1)))
            return (out - x) / gap
        return -out if flip else out

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> FlowMapOutput:
        return FlowMapOutput(self.velocity(x, s), None)

    def extra_repr(self) -> str:
        return f"data_shape={self.data_shape}, time={self.time!r}, output={self.output!r}"


__all__ = ["ExternalVelocity", "OUTPUTS", "TIME_CONVENTIONS"]
