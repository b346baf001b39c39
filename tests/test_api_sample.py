"""``f2d2.sample`` (samples with their log-density) and ``grad=True`` (a differentiable log p) of the API."""

from __future__ import annotations

import pytest
import torch

import f2d2
from analytic import GaussianFlow
from f2d2.core.flowmap import flow_map_step
from f2d2.core.guidance import self_guided_noise
from f2d2.core.likelihood import standard_normal_log_prob, time_grid
from f2d2.core.sampling import reference_sample
from f2d2.nets import MLPFlowMap

MU, SIGMA = [1.0, -0.5], 0.6


def _noise(n: int = 400, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _mlp(*, head: bool = False, flow_map: bool = True, hidden: int = 32) -> MLPFlowMap:
    """A random (untrained) float64 MLP; its zero-initialised head is randomised so that D is not constant."""
    torch.manual_seed(3)
    model = MLPFlowMap(dim=2, hidden=hidden, depth=2, time_freqs=2, div_head=head, flow_map=flow_map).double()
    if head:
        torch.nn.init.normal_(model.d_head.weight, std=0.5)
    return model


@pytest.mark.parametrize("steps", [1, 4])
def test_samples_and_log_q_are_the_gaussian_closed_form(steps):
    """The exact flow map with its exact head: x1 = mu + sigma x0 and log q(x1) = log N(x1; mu, sigma^2 I)."""
    model = GaussianFlow(MU, SIGMA, div_scale=7.0)
    x0 = _noise()
    x1, log_q = f2d2.sample(model, x0, steps, log_prob=True)
    assert x1.shape == x0.shape and log_q.shape == (len(x0),)
    assert (x1 - (torch.tensor(MU) + SIGMA * x0)).abs().max() < 1e-5
    assert (log_q - model.log_prob_data(x1)).abs().max() < 1e-5
    # Both directions: the likelihood of the returned samples, integrated back in K steps, is log q.
    assert (f2d2.log_prob(model, x1, steps=steps) - log_q).abs().max() < 1e-5
    assert torch.equal(f2d2.sample(model, x0, steps), x1)  # the head's density rides on the same jumps
    x1_back, log_q_back = f2d2.sample(model, x0, steps, log_prob=True, log_prob_from="sample")
    assert torch.equal(x1_back, x1) and (log_q_back - model.log_prob_data(x1)).abs().max() < 1e-5


def test_log_prob_from_the_sample_is_the_likelihood_of_the_plain_samples():
    """log_prob_from="sample": x1 as without log_prob (a map's own jumps, the plain reference), log q exactly
    f2d2.log_prob of it; a random head's forward log q is something else (its two directions are unrelated)."""
    head = _mlp(head=True)
    x0 = _noise(60, dtype=torch.float64)
    x1, log_q = f2d2.sample(head, x0, 2, log_prob=True, log_prob_from="sample", batch_size=25)
    # the same batches: a matrix product's last bits may depend on the batch's size (on some CPUs)
    assert torch.equal(x1, f2d2.sample(head, x0, 2, batch_size=25))
    assert torch.allclose(log_q, f2d2.log_prob(head, x1, steps=2), rtol=0, atol=1e-12)
    assert (log_q - f2d2.sample(head, x0, 2, log_prob=True)[1]).abs().mean() > 1e-2
    shortcut = _mlp(flow_map=True)  # no head: the jumps' samples, their likelihood by backward Euler steps
    x1, log_q = f2d2.sample(shortcut, x0, 3, log_prob=True, log_prob_from="sample")
    assert torch.equal(x1, f2d2.sample(shortcut, x0, 3))
    assert torch.allclose(log_q, f2d2.log_prob(shortcut, x1, steps=3, div="exact"), rtol=0, atol=1e-12)
    euler = GaussianFlow(MU, SIGMA, flow_map=False)
    x1, log_q = f2d2.sample(euler, x0[:20].float(), None, log_prob=True, log_prob_from="sample")
    assert torch.equal(x1, reference_sample(euler, x0[:20].float()))
    assert torch.equal(log_q, f2d2.log_prob(euler, x1, steps=None))
    x1, log_q = f2d2.sample(head, x0, 1, log_prob=True, log_prob_from="sample", grad=True)
    (grad,) = torch.autograd.grad(log_q.sum(), head.d_head.weight)
    assert grad.abs().sum() > 0


def test_an_integer_draws_the_noise_from_the_generator_on_the_models_device_and_dtype():
    model = GaussianFlow(MU, SIGMA)
    x1 = f2d2.sample(model, 50, 1, generator=torch.Generator().manual_seed(4))
    noise = torch.randn((50, 2), generator=torch.Generator().manual_seed(4))  # as f2d2 sample --seed 4 draws it
    assert torch.equal(x1, f2d2.sample(model, noise, 1))
    double = _mlp(head=True)
    assert f2d2.sample(double, 3, 2).dtype == torch.float64


def test_steps_none_is_the_adaptive_reference():
    model = GaussianFlow(MU, SIGMA, flow_map=False)
    x0 = _noise(200)
    assert torch.equal(f2d2.sample(model, x0, None), reference_sample(model, x0))
    x1, log_q = f2d2.sample(model, x0, None, log_prob=True)
    # The joint solve also controls the density's error: x1 equals the plain reference to its tolerance.
    assert (x1 - reference_sample(model, x0)).abs().max() < 1e-4
    err = (log_q - model.log_prob_data(x1)).abs()  # float32, atol = rtol = 1e-5: 3e-5 mean, 3e-4 in the far tail
    assert err.mean() < 1e-4 and err.max() < 1e-3
    assert (f2d2.sample(model, x0, 4, log_prob=True)[1] - model.log_prob_data(x1)).abs().mean() > 1e-2


def test_log_q_agrees_with_log_prob_of_the_samples_as_far_as_the_integrators_do():
    """A random MLP: forward and backward Euler are not inverse maps, so the K-step log q and the K-step log p of
    the same samples differ by O(1/K); the adaptive reference's two directions agree to the solver's tolerance.
    (A random map with a head has no such guarantee: u(x, 1, 0) is not the inverse of u(x, 0, 1) until trained.)"""
    model = _mlp()
    x0 = _noise(200, dtype=torch.float64)
    gap = {}
    for k in (16, 64):
        x1, log_q = f2d2.sample(model, x0, k, log_prob=True)
        gap[k] = (f2d2.log_prob(model, x1, steps=k) - log_q).abs().mean()
    assert gap[64] < 3e-3 and gap[16] / gap[64] == pytest.approx(4, rel=0.1)  # measured: 2.1e-3, 5.2e-4
    x1, log_q = f2d2.sample(model, x0, None, log_prob=True)
    assert (f2d2.log_prob(model, x1, steps=None) - log_q).abs().max() < 2e-3  # measured: 6e-4 (atol = rtol = 1e-5)


def test_a_map_without_a_head_tracks_its_density_with_euler_steps_of_its_velocity():
    shortcut = _mlp(flow_map=True)
    x0 = _noise(50, dtype=torch.float64)
    x1, log_q = f2d2.sample(shortcut, x0, 3, log_prob=True)
    euler = _mlp(flow_map=False)
    assert torch.equal(x1, f2d2.sample(euler, x0, 3))
    assert not torch.allclose(x1, f2d2.sample(shortcut, x0, 3))  # its jumps go elsewhere


def test_guidance_moves_the_noise_and_log_q_is_the_density_of_the_returned_sample():
    model = GaussianFlow(MU, SIGMA)
    x0 = _noise(100)
    with torch.no_grad():  # the guidance's Adam steps take gradients whatever the caller's mode
        x1, log_q = f2d2.sample(model, x0, 1, log_prob=True, guidance={"lr": 0.05, "steps": 2}, batch_size=30)
    guided = self_guided_noise(model, x0, lr=0.05, steps=2)
    assert not torch.allclose(guided, x0)
    assert torch.allclose(x1, f2d2.sample(model, guided, 1), atol=1e-6)
    assert (log_q - model.log_prob_data(x1)).abs().max() < 1e-4


def test_batches_do_not_change_the_result():
    model = _mlp(head=True)
    x0 = _noise(50, dtype=torch.float64)
    whole = f2d2.sample(model, x0, 2, log_prob=True)
    parts = f2d2.sample(model, x0, 2, log_prob=True, batch_size=7)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(whole, parts))


def test_bad_input_is_refused_by_name_before_any_work(tmp_path):
    plain, head = GaussianFlow(MU, SIGMA, flow_map=False), GaussianFlow(MU, SIGMA)
    missing = tmp_path / "missing.pt"  # never loaded: the arguments are refused first
    for bad, match in [
        (dict(n_or_noise=0), r"n = 0; expected a number of samples >= 1"),
        (dict(n_or_noise=2.0), "n_or_noise is a float"),
        (dict(steps=0), r"steps = 0; expected an integer K >= 1"),
        (dict(steps=1.5), r"steps = 1.5"),
        (dict(log_prob=1), r"log_prob = 1; expected True or False"),
        (dict(grad="yes"), r"grad = 'yes'"),
        (dict(div="exact"), r"div = 'exact' chooses the divergence of log q; it needs log_prob=True"),
        (dict(log_prob_from="sample"), r"log_prob_from = 'sample' chooses how log q is computed; it needs log_prob"),
        (dict(log_prob=True, log_prob_from="data"), r"log_prob_from = 'data'; expected one of \['noise', 'sample'\]"),
        (dict(guidance={"steps": 2}), r"guidance = \{'steps': 2\}; expected None or \{'lr'"),
    ]:
        with pytest.raises(ValueError, match=match):
            f2d2.sample(missing, **{"n_or_noise": 4, **bad})
    with pytest.raises(ValueError, match=r"noise has shape \(4, 3\); expected \(B >= 1, \*data_shape\) = \(B, 2\)"):
        f2d2.sample(plain, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"noise has shape \(2,\)"):
        f2d2.sample(plain, torch.zeros(2))
    with pytest.raises(ValueError, match="this one has none, so its log-density integrates the velocity's divergence"):
        f2d2.sample(plain, 4, 1, log_prob=True, div="head")
    with pytest.raises(ValueError, match=r"adaptive reference integrates the velocity's divergence: div = 'exact'"):
        f2d2.sample(head, 4, None, log_prob=True, div="head")
    with pytest.raises(ValueError, match="self-guidance needs an F2D2 model with a divergence head"):
        f2d2.sample(plain, 4, 1, guidance={"lr": 0.1})
    with pytest.raises(ValueError, match=r"self-guidance needs lr > 0 and steps >= 0; got lr=-1"):
        f2d2.sample(head, 4, 1, guidance={"lr": -1, "steps": 1})
    with pytest.raises(ValueError, match="grad = 1"):
        f2d2.log_prob(head, torch.zeros(3, 2), grad=1)


# Differentiable log p (grad=True).


def _old_log_prob(model, x, steps, div):
    """log p as f2d2.log_prob computed it before grad=True existed: flow-map steps under no_grad."""
    with torch.no_grad():
        grid, total = time_grid(steps), torch.zeros(x.shape[0], dtype=x.dtype)
        for s, t in zip(grid[:-1], grid[1:]):
            x, dlogp = flow_map_step(model, x, s, t, div=div)
            total = total + dlogp
        return standard_normal_log_prob(x) - total


@pytest.mark.parametrize(("head", "steps", "div"), [(True, 1, "head"), (False, 2, "exact")])
def test_log_prob_passes_gradcheck_in_the_input(head, steps, div):
    model = _mlp(head=head, hidden=8)
    x = _noise(3, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y: f2d2.log_prob(model, y, steps, div=div, grad=True), (x,))
    noise = _noise(3, seed=1, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: f2d2.sample(model, z, steps, log_prob=True, grad=True), (noise,))


@pytest.mark.parametrize(("head", "steps", "div"), [(True, 1, "head"), (False, 2, "exact")])
def test_log_prob_gradient_in_a_parameter_matches_finite_differences(head, steps, div):
    model = _mlp(head=head, hidden=8)
    x = _noise(5, dtype=torch.float64)
    weight = model.trunk[0].weight
    f2d2.log_prob(model, x, steps, div=div, grad=True).sum().backward()
    auto = weight.grad[1, 2].item()
    eps = 1e-6
    with torch.no_grad():
        weight[1, 2] += eps
        up = f2d2.log_prob(model, x, steps, div=div).sum().item()
        weight[1, 2] -= 2 * eps
        down = f2d2.log_prob(model, x, steps, div=div).sum().item()
        weight[1, 2] += eps
    fd = (up - down) / (2 * eps)
    assert abs(auto) > 1e-3 and abs(auto - fd) / abs(fd) < 1e-4


@pytest.mark.parametrize(("head", "steps", "div"), [(True, 3, "head"), (False, 2, "exact"), (False, 2, "hutchinson")])
def test_grad_false_is_untracked_and_unchanged(head, steps, div):
    model = _mlp(head=head)
    x = _noise(20, dtype=torch.float64).requires_grad_(True)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = f2d2.log_prob(model, x, steps, div=div, generator=gen())
    assert not plain.requires_grad
    if div != "hutchinson":
        assert torch.equal(plain, _old_log_prob(model, x, steps, div))
    tracked = f2d2.log_prob(model, x, steps, div=div, generator=gen(), grad=True)
    assert tracked.requires_grad and torch.allclose(tracked, plain, rtol=0, atol=1e-12)
    x1, log_q = f2d2.sample(model, x, steps, log_prob=True, div=div, generator=gen())
    assert not (x1.requires_grad or log_q.requires_grad)


def test_reference_log_prob_is_differentiable_in_the_data():
    """The score of the dopri5 reference of the Gaussian velocity: grad log p(x) = -(x - mu) / sigma^2."""
    model = GaussianFlow(MU, SIGMA, flow_map=False).double()
    x = (torch.tensor(MU, dtype=torch.float64) + SIGMA * _noise(20, dtype=torch.float64)).requires_grad_(True)
    (score,) = torch.autograd.grad(f2d2.log_prob(model, x, None, grad=True).sum(), x)
    assert (score + (x.detach() - model.mu) / SIGMA**2).abs().max() < 1e-3
