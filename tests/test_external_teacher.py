"""A velocity model from outside f2d2 as the teacher (f2d2.ExternalVelocity, the config form), and f2d2.log_prob."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import f2d2
from analytic import GaussianFlow
from external_models import time_mlp
from f2d2.core.likelihood import standard_normal_log_prob
from f2d2.eval.bpd import dequantize
from f2d2.io.checkpoint import load_model
from f2d2.nets import build_model
from f2d2.objectives import build_objective

MEANS = torch.tensor([[1.5, 1.5], [-1.5, -1.5], [1.5, -1.5], [-1.5, 1.5]])


def four_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2) points of an equal mixture of N(m, 0.35^2 I) at the corners of a square."""
    return MEANS[torch.randint(0, 4, (n,), generator=generator)] + 0.35 * torch.randn(n, 2, generator=generator)


def train_with_flow_matching_package(steps: int, generator: torch.Generator) -> nn.Module:
    """A velocity MLP trained by the flow_matching package's conditional-OT path (its MSE on dx_t)."""
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    net, path = time_mlp(dim=2, hidden=64), AffineProbPath(scheduler=CondOTScheduler())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        x1 = four_gaussians(256, generator)
        sample = path.sample(
            x_0=torch.randn(x1.shape, generator=generator), x_1=x1, t=torch.rand(x1.shape[0], generator=generator)
        )
        loss = (net(sample.x_t, sample.t) - sample.dx_t).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


def test_a_flow_matching_package_teacher_distills_to_a_one_step_f2d2_likelihood(tmp_path):
    from flow_matching.solver import ODESolver

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = train_with_flow_matching_package(400, gen)
    torch.save(net.state_dict(), tmp_path / "velocity.pt")
    spec = {
        "factory": "external_models:time_mlp",
        "kwargs": {"hidden": 64},
        "state_dict": str(tmp_path / "velocity.pt"),
        "data_shape": [2],
    }
    objective = build_objective(
        {"name": "shortcut_distill_f2d2", "teacher": spec, "semigroup_log2": 3, "semigroup_fraction": 0.5},
        teacher=f2d2.load_teacher_spec(spec),
    )
    student = build_model({"arch": "mlp", "dim": 2, "hidden": 128, "depth": 3, "div_head": True, "flow_map": True})
    opt = torch.optim.RAdam(student.parameters(), lr=2e-3)
    for _ in range(1000):
        loss = objective(student, four_gaussians(256, gen), gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    x = four_gaussians(500, torch.Generator().manual_seed(1))
    _, reference = ODESolver(net).compute_likelihood(
        x, standard_normal_log_prob, step_size=None, method="dopri5", atol=1e-6, rtol=1e-6, exact_divergence=True
    )
    teacher = objective.teacher  # the spec, loaded: factory + weights, in f2d2's interface
    assert (f2d2.log_prob(teacher, x, steps=None) - reference).abs().max() < 1e-2  # f2d2 dopri5 at tol 1e-5
    f2d2_err = (f2d2.log_prob(student, x, steps=1) - reference).abs().mean().item()
    euler_err = (f2d2.log_prob(teacher, x, steps=1) - reference).abs().mean().item()
    print(f"\nmean |NLL - flow_matching dopri5 NLL| at K = 1: F2D2 {f2d2_err:.3f} nats, teacher Euler {euler_err:.3f}")
    assert euler_err > 0.5  # one Euler step of this flow is far off
    assert f2d2_err < 0.5 * euler_err


def _closed_form() -> tuple[GaussianFlow, torch.Tensor, torch.Tensor]:
    flow = GaussianFlow([1.0, -2.0], 0.5, flow_map=False)
    gen = torch.Generator().manual_seed(3)
    return flow, torch.randn(64, 2, generator=gen) * 2, torch.rand(64, generator=gen) * 0.98


def test_time_convention_and_denoiser_conversions_recover_the_closed_form_velocity():
    flow, x, t = _closed_form()
    v = flow.velocity(x, t)
    as_data_to_noise = lambda y, tau: -flow.velocity(y, 1 - tau)  # noqa: E731  (t = 0 data, dx/dtau)
    denoiser = lambda y, s: y + (1 - s[:, None]) * flow.velocity(y, s)  # noqa: E731  (E[x1 | x_s])
    denoiser_data_to_noise = lambda y, tau: y + tau[:, None] * flow.velocity(y, 1 - tau)  # noqa: E731
    cases = [
        (flow.velocity, "noise_to_data", "velocity"),
        (as_data_to_noise, "data_to_noise", "velocity"),
        (denoiser, "noise_to_data", "denoiser"),
        (denoiser_data_to_noise, "data_to_noise", "denoiser"),
    ]
    for fn, time, output in cases:
        wrapped = f2d2.ExternalVelocity(fn, [2], time=time, output=output)
        assert torch.allclose(wrapped.velocity(x, t), v, atol=1e-5), (time, output)
    unflipped = f2d2.ExternalVelocity(as_data_to_noise, [2])
    assert not torch.allclose(unflipped.velocity(x, t), v, atol=1e-2)
    # the likelihood of the converted field is the closed form's
    flipped = f2d2.ExternalVelocity(as_data_to_noise, [2], time="data_to_noise")
    assert torch.allclose(f2d2.log_prob(flipped, x, steps=None), flow.log_prob_data(x), atol=1e-3)


def test_a_missing_factory_wrong_keys_and_a_wrong_output_shape_each_say_what_was_expected(tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "linear.pt")
    good = {
        "factory": "torch.nn:Linear",
        "kwargs": {"in_features": 2, "out_features": 2},
        "state_dict": str(tmp_path / "linear.pt"),
        "data_shape": [2],
    }
    assert isinstance(f2d2.load_teacher_spec(good), f2d2.ExternalVelocity)
    torch.save({"w": torch.zeros(2, 2)}, tmp_path / "wrong.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pt")  # a whole module: pickled code, refused unread
    bad = [
        ({"factory": "no_such_pkg.models:make"}, "no module named 'no_such_pkg'.*expected 'package.module:function'"),
        ({"factory": "torch.nn:NoSuchLayer"}, "'torch.nn' has no attribute 'NoSuchLayer'"),
        ({"factory": "torch.nn.Linear"}, "factory = 'torch.nn.Linear'; expected .*package.module:function"),
        (
            {"state_dict": str(tmp_path / "wrong.pt")},
            r"does not fit .*missing keys \['bias', 'weight'\], unexpected keys \['w'\]",
        ),
        ({"state_dict": str(tmp_path / "none.pt")}, "is not an existing file"),
        ({"state_dict": str(tmp_path / "pickled.pt")}, "could not be read as tensors only"),
        ({"time": "backwards"}, "time = 'backwards'; expected 'noise_to_data' or 'data_to_noise'"),
        ({"data_shape": None}, "data_shape = None; expected a list of at least 1 item.*integer >= 1"),
        ({"weights": "x.pt"}, "objective.teacher.weights is an unknown key"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message) as err:
            f2d2.load_teacher_spec({**good, **change})
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="objective.teacher.state_dict is missing"):
        f2d2.load_teacher_spec({k: v for k, v in good.items() if k != "state_dict"})

    wrong_shape = f2d2.ExternalVelocity(lambda y, t: y[:, :1], [2])
    with pytest.raises(
        ValueError,
        match=r"returned \(5, 1\) for x of shape \(5, 2\); expected a tensor of x's "
        r"shape \(a velocity per point\)",
    ) as err:
        wrong_shape.velocity(torch.zeros(5, 2), torch.zeros(5))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"expected \(B, \*data_shape\) = \(B, 2\)"):
        f2d2.ExternalVelocity(lambda y, t: y, [2]).velocity(torch.zeros(5, 3), torch.zeros(5))


def test_an_external_teacher_trains_meanflow_f2d2_and_a_run_config_names_one(tmp_path):
    from f2d2.config.resolve import resolve_run
    from f2d2.training.loop import train

    flow = GaussianFlow([1.0, -2.0], 0.5, flow_map=False)
    teacher = f2d2.ExternalVelocity(lambda y, tau: -flow.velocity(y, 1 - tau), [2], time="data_to_noise")
    objective = build_objective({"name": "meanflow_f2d2", "tangent": "teacher"}, teacher=teacher)
    student = build_model({"arch": "mlp", "hidden": 32, "depth": 2, "div_head": True, "flow_map": True})
    terms = objective(student, torch.randn(64, 2), torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["loss"]) and set(terms) == {"loss", "mf", "mf_div"}

    torch.save(time_mlp(hidden=16).state_dict(), tmp_path / "velocity.pt")
    spec = {
        "factory": "external_models:time_mlp",
        "kwargs": {"hidden": 16},
        "state_dict": str(tmp_path / "velocity.pt"),
        "data_shape": [2],
    }
    run = resolve_run(
        {
            "model": {"hidden": 32, "depth": 2, "time_freqs": 2, "div_head": True},
            "objective": {"name": "shortcut_distill_f2d2", "teacher": spec},
            "train": {"steps": 2, "batch_size": 32, "log_every": 1, "ckpt_every": 2},
        }
    )
    ckpt = train(run, tmp_path / "distilled", progress=False)
    x = torch.randn(8, 2)
    assert torch.equal(f2d2.log_prob(ckpt, x, steps=2), f2d2.log_prob(load_model(ckpt), x, steps=2))


def test_log_prob_on_the_closed_form_gaussian_flow():
    exact_map = GaussianFlow([1.0, -2.0], 0.5, div_scale=3.0)
    velocity_only = GaussianFlow([1.0, -2.0], 0.5, flow_map=False)
    x = exact_map.mu + 0.5 * torch.randn(64, 2, generator=torch.Generator().manual_seed(6))  # data points
    truth = exact_map.log_prob_data(x)
    assert torch.allclose(f2d2.log_prob(exact_map, x), truth, atol=1e-4)  # steps=1, the divergence head
    assert torch.allclose(f2d2.log_prob(exact_map, x, steps=4), truth, atol=1e-4)
    first_order = f2d2.log_prob(exact_map, x, steps=4, backward="forward-only")  # the paper's backward trick
    assert 0 < (first_order - truth).abs().mean() < (f2d2.log_prob(velocity_only, x, steps=4) - truth).abs().mean()
    assert torch.allclose(f2d2.log_prob(velocity_only, x, steps=None), truth, atol=1e-3)  # dopri5
    euler = [(f2d2.log_prob(velocity_only, x, steps=k) - truth).abs().mean() for k in (1, 8, 64)]
    assert euler[0] > euler[1] > euler[2] and euler[2] < 0.05 * euler[0]  # first order in 1 / K
    chunked = f2d2.log_prob(velocity_only, x, steps=3, batch_size=10)
    assert chunked.shape == (64,) and torch.allclose(chunked, f2d2.log_prob(velocity_only, x, steps=3), atol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(B, \*data_shape\) = \(B, 2\)"):
        f2d2.log_prob(exact_map, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="expected an integer K >= 1"):
        f2d2.log_prob(exact_map, x, steps=0)
    with pytest.raises(ValueError, match="bits_per_dim scores 8-bit images"):
        f2d2.bits_per_dim(exact_map, x)


def test_bits_per_dim_of_a_closed_form_flow_on_images():
    flow = GaussianFlow([0.1, -0.2, 0.3, 0.0], 0.6, flow_map=False)
    image = f2d2.ExternalVelocity(lambda y, t: flow.velocity(y.flatten(1), t).reshape(y.shape), [1, 2, 2])
    pixels = torch.randint(0, 256, (16, 1, 2, 2), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    got = f2d2.bits_per_dim(image, pixels, steps=None, dequant=torch.Generator().manual_seed(5))
    z = dequantize(pixels, torch.Generator().manual_seed(5)).flatten(1)
    expected = -flow.log_prob_data(z).double() / (4 * math.log(2)) + 7
    assert got.dtype == torch.float64 and torch.allclose(got, expected, atol=1e-3)


def test_a_config_names_an_outside_teacher_checked_before_training(tmp_path):
    from f2d2.config.resolve import ConfigError, resolve_run
    from f2d2.preflight.checks import check_run

    torch.save(time_mlp(hidden=16).state_dict(), tmp_path / "velocity.pt")
    spec = {"factory": "external_models:time_mlp", "state_dict": str(tmp_path / "velocity.pt"), "data_shape": [2]}
    config = {"model": {"div_head": True}, "objective": {"name": "shortcut_distill_f2d2", "teacher": spec}}
    check_run(resolve_run(config))  # accepted
    missing = {**spec, "state_dict": str(tmp_path / "none.pt")}
    with pytest.raises(ConfigError, match=r"objective.teacher.state_dict = '.*none.pt' is not an existing file"):
        check_run(resolve_run({**config, "objective": {**config["objective"], "teacher": missing}}))
    with pytest.raises(ConfigError, match="objective.teacher"):  # the schema: a factory must be module:function
        resolve_run({**config, "objective": {**config["objective"], "teacher": {**spec, "factory": "no colon"}}})
