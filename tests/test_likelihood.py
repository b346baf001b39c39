"""The likelihood integrators, divergence estimator and sampling against closed forms and a peer."""

from __future__ import annotations

import math

import pytest
import torch

from analytic import GaussianFlow
from f2d2.core.divergence import divergence
from f2d2.core.likelihood import log_likelihood, reference_log_likelihood, standard_normal_log_prob
from f2d2.core.sampling import reference_sample, sample
from f2d2.eval.bpd import bits_per_dim
from f2d2.nets import MLPFlowMap

MU, SIGMA = [1.0, -0.5], 0.6


@pytest.fixture
def gaussian_points():
    g = torch.Generator().manual_seed(0)
    return torch.tensor(MU) + SIGMA * torch.randn(400, 2, generator=g)


def test_reference_recovers_gaussian_log_density(gaussian_points):
    model = GaussianFlow(MU, SIGMA, flow_map=False)
    res = reference_log_likelihood(model, gaussian_points, atol=1e-7, rtol=1e-7)
    exact = model.log_prob_data(gaussian_points)
    assert (res.log_prob - exact).abs().max() < 1e-4
    # x0 is the noise the flow sends to x1: x1 = mu + sigma * x0 for this flow.
    assert torch.allclose(res.x0, (gaussian_points - torch.tensor(MU)) / SIGMA, atol=1e-4)


def test_many_step_euler_converges_to_gaussian_log_density(gaussian_points):
    model = GaussianFlow(MU, SIGMA, flow_map=False)
    exact = model.log_prob_data(gaussian_points)
    errs = {
        k: (log_likelihood(model, gaussian_points, k, div="exact").log_prob - exact).abs().mean() for k in (10, 1000)
    }
    assert errs[1000] < 5e-3
    assert errs[10] > 5 * errs[1000]  # first order: the error falls with K


def test_exact_flow_map_head_is_exact_in_one_step(gaussian_points):
    model = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=7.0)
    exact = model.log_prob_data(gaussian_points)
    one = log_likelihood(model, gaussian_points, 1, div="head", backward="two-way")
    assert (one.log_prob - exact).abs().max() < 1e-4
    # The forward-only approximation of the same exact map is not exact in one step.
    fwd = log_likelihood(model, gaussian_points, 1, div="head", backward="forward-only")
    assert (fwd.log_prob - exact).abs().mean() > 1e-2


@pytest.mark.parametrize("backward", ["two-way", "forward-only"])
def test_more_steps_are_never_worse_on_the_closed_form_flow(gaussian_points, backward):
    """K-step F2D2 likelihoods of the exact joint flow map: with two-way steps every K is exact, with the paper's
    forward-only trick (an approximation per step) the error falls as K grows; a K-step walk that went wrong at
    K > 1 (a jump's times, its sign, the head's scale) would make a longer K worse than a shorter one. The
    allowance is float32's (the closed-form flow has no Hutchinson probe)."""
    model = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=7.0)
    exact = model.log_prob_data(gaussian_points)
    errs = {
        k: float(
            (log_likelihood(model, gaussian_points, k, div="head", backward=backward).log_prob - exact).abs().mean()
        )
        for k in (1, 2, 4, 8)
    }
    for short, long in ((1, 2), (2, 4), (4, 8), (1, 8)):
        assert errs[long] <= errs[short] + 1e-4, (backward, errs)
    if backward == "forward-only":
        assert errs[8] < 0.75 * errs[1]  # an approximation per step: smaller steps, a smaller error


def test_sampling_moves_noise_to_data():
    model = GaussianFlow(MU, SIGMA, flow_map=False)
    x0 = torch.randn(20000, 2, generator=torch.Generator().manual_seed(1))
    x1 = sample(model, x0, 200)
    assert torch.allclose(x1.mean(0), torch.tensor(MU), atol=0.02)
    assert torch.allclose(x1.std(0), torch.full((2,), SIGMA), atol=0.02)
    one = sample(GaussianFlow(MU, SIGMA, flow_map=True), x0, 1)  # exact map: one step lands exactly
    assert torch.allclose(one, torch.tensor(MU) + SIGMA * x0, atol=1e-5)


def test_reference_sample_follows_the_exact_flow():
    model = GaussianFlow(MU, SIGMA, flow_map=False)
    x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(2))
    exact = torch.tensor(MU) + SIGMA * x0  # this flow's time-1 map
    assert (reference_sample(model, x0, atol=1e-7, rtol=1e-7) - exact).abs().max() < 1e-4
    assert (sample(model, x0, 4) - exact).abs().max() > 1e-2  # few Euler steps of the same velocity are not
    with pytest.raises(ValueError, match="atol=0"):
        reference_sample(model, x0, atol=0)


def _random_mlp(dim: int = 3) -> MLPFlowMap:
    torch.manual_seed(3)
    return MLPFlowMap(dim=dim, hidden=32, depth=2, time_freqs=2)


def test_exact_divergence_equals_jacobian_trace():
    model = _random_mlp()
    x = torch.randn(16, 3)
    t = torch.full((16,), 0.3)
    _, div = divergence(lambda y: model.velocity(y, t), x, "exact")
    jac = torch.func.vmap(torch.func.jacrev(lambda xi, ti: model.velocity(xi[None], ti[None])[0]))(x, t)
    assert torch.allclose(div, jac.diagonal(dim1=1, dim2=2).sum(1), atol=1e-5)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_mean_matches_exact_trace(probe):
    model = _random_mlp()
    x = torch.randn(4, 3)
    t = torch.full((4,), 0.7)
    _, exact = divergence(lambda y: model.velocity(y, t), x, "exact")
    reps = 20000
    xr, tr = x.repeat(reps, 1), t.repeat(reps)
    _, est = divergence(
        lambda y: model.velocity(y, tr), xr, "hutchinson", probe=probe, generator=torch.Generator().manual_seed(0)
    )
    est = est.reshape(reps, 4)
    stderr = est.std(0) / math.sqrt(reps)
    assert ((est.mean(0) - exact).abs() < 5 * stderr + 1e-6).all()
    assert (est.std(0) > 0).all()  # a real estimator, not the exact trace in disguise


def test_bits_per_dim_of_known_values():
    assert bits_per_dim(torch.tensor([2 * math.log(2)]), 2).item() == pytest.approx(1.0)
    assert bits_per_dim(torch.tensor([3072 * 8 * math.log(2)]), 3072).item() == pytest.approx(8.0)
    # N(0, I) at its mode: NLL = d/2 log(2 pi) nats = log2(2 pi)/2 bits per dimension.
    nll0 = -standard_normal_log_prob(torch.zeros(1, 5))
    assert bits_per_dim(nll0, 5).item() == pytest.approx(0.5 * math.log2(2 * math.pi))


def test_reference_agrees_with_flow_matching_package():
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    model = _random_mlp(dim=2)

    class Wrapped(ModelWrapper):
        def forward(self, x, t, **extras):
            return self.model.velocity(x, t.expand(x.shape[0]))

    x1 = torch.randn(200, 2, generator=torch.Generator().manual_seed(5)) * 2
    _, peer = ODESolver(Wrapped(model)).compute_likelihood(
        x1, standard_normal_log_prob, step_size=None, method="dopri5", atol=1e-7, rtol=1e-7, exact_divergence=True
    )
    ours = reference_log_likelihood(model, x1, atol=1e-7, rtol=1e-7)
    assert torch.allclose(ours.log_prob, peer, atol=1e-4)
    assert (ours.log_prob - standard_normal_log_prob(x1)).abs().mean() > 1e-2  # the flow is not the identity


def test_one_place_decides_the_divergence_for_the_api_and_the_cli():
    """api.py and cli/commands.py each decided it: f2d2.log_prob of a model without a head with div='head'
    failed deep inside the integrator, and 'Head' fell through."""
    from f2d2 import log_prob
    from f2d2.core.options import divergence_for

    assert divergence_for(None, has_head=True, adaptive=False) == "head"
    assert divergence_for(None, has_head=True, adaptive=True) == "exact"
    assert divergence_for(None, has_head=False, adaptive=False) == "exact"
    plain = GaussianFlow([0.0, 0.0], 1.0, flow_map=False)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="needs a model with a divergence head"):
        log_prob(plain, x, steps=1, div="head")
    with pytest.raises(ValueError, match=r"div = 'Head'; expected one of \['head', 'exact', 'hutchinson'\]"):
        log_prob(plain, x, steps=1, div="Head")
    with pytest.raises(ValueError, match="adaptive reference integrates the velocity's divergence"):
        log_prob(GaussianFlow([0.0, 0.0], 1.0, div_scale=1.0), x, steps=None, div="head")


def test_solves_without_gradients_freeze_the_parameters_and_give_them_back():
    """A no-gradient solve records no graph to the parameters (each divergence evaluation sees them frozen), gives
    the same numbers, and leaves every parameter's requires_grad as it was, also after an error inside."""
    torch.manual_seed(0)
    model = MLPFlowMap(dim=2, hidden=16, depth=2, time_freqs=2, flow_map=False)
    model.u_head.bias.requires_grad_(False)  # a parameter the caller froze stays frozen
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(1))
    seen = []
    velocity = model.velocity

    def spy(z, t):
        seen.append(any(p.requires_grad for p in model.parameters()))
        return velocity(z, t)

    model.velocity = spy
    plain = reference_log_likelihood(model, x).log_prob
    euler = log_likelihood(model, x, 3, div="exact").log_prob
    assert seen and not any(seen)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before
    seen.clear()
    graph = reference_log_likelihood(model, x, grad=True).log_prob
    assert all(seen) and graph.requires_grad
    assert torch.allclose(graph.detach(), plain, atol=1e-5)
    assert torch.allclose(log_likelihood(model, x, 3, div="exact", grad=True).log_prob.detach(), euler)

    def broken(z, t):
        raise RuntimeError("boom")

    model.velocity = broken
    with pytest.raises(RuntimeError, match="boom"):
        reference_log_likelihood(model, x)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before
