"""The one divergence estimator: exact trace of the Jacobian, or Hutchinson's estimate.

``fn`` maps x of shape (B, *data_shape) to a tensor of the same shape, acting on
each batch row independently; the divergence is returned per row, shape (B,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

METHODS = ("exact", "hutchinson")


def divergence(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    method: str = "exact",
    *,
    generator: torch.Generator | None = None,
    probe: str | torch.Tensor = "rademacher",
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(fn(x), div fn(x))`` with shapes (B, *data_shape) and (B,).

    ``exact`` takes one vector-Jacobian product per data dimension (cheap in 2D);
    ``hutchinson`` takes one: eps^T (d fn / dx) eps with a Rademacher or Gaussian
    probe eps drawn from ``generator`` (or ``probe`` itself when it is a tensor
    of x's shape: a probe held fixed through an adaptive ODE solve), an unbiased
    estimate of the trace.
    Gradients are enabled inside even under ``torch.no_grad``. With ``create_graph`` the outputs keep a
    graph to the model's parameters and to x (when x carries one): a differentiable log-density.
    Without it they are detached.
    """
    if method not in METHODS:
        raise ValueError(f"divergence method {method!r} is unknown; expected one of {METHODS}")
    with torch.enable_grad():
        if not (create_graph and x.requires_grad):
            x = x.detach().requires_grad_(True)
        y = fn(x)
        if y.shape != x.shape:
            raise ValueError(f"divergence needs fn(x) of x's shape {tuple(x.shape)}, got {tuple(y.shape)}")
        if method == "exact":
            flat_y = y.reshape(y.shape[0], -1)
            div = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
            n = flat_y.shape[1]
            for i in range(n):
                (g,) = torch.autograd.grad(
                    flat_y[:, i].sum(), x, retain_graph=create_graph or i < n - 1, create_graph=create_graph
                )
                div = div + g.reshape(g.shape[0], -1)[:, i]
        else:
            eps = probe if isinstance(probe, torch.Tensor) else hutchinson_probe(x, probe, generator)
            (g,) = torch.autograd.grad(y, x, eps, create_graph=create_graph)
            div = (g * eps).reshape(x.shape[0], -1).sum(1)
    if not create_graph:
        y, div = y.detach(), div.detach()
    return y, div


def hutchinson_probe(
    x: torch.Tensor, kind: str = "rademacher", generator: torch.Generator | None = None
) -> torch.Tensor:
    """A probe eps of x's shape (B, *data_shape), dtype and device, drawn from ``generator``.

    ``"rademacher"``: entries +-1 with equal odds (one ``randint(0, 2)`` draw, mapped to 2 b - 1);
    ``"gaussian"``: N(0, 1) entries. Either gives E[eps eps^T] = I, hence an unbiased trace estimate.
    """
    if kind == "rademacher":
        bits = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
        return bits.to(x.dtype) * 2 - 1
    if kind == "gaussian":
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    raise ValueError(f"Hutchinson probe {kind!r} is unknown; expected 'rademacher' or 'gaussian'")
