"""The image U-Net: shapes, conditioning on both flow-map times, the divergence head's gradient path."""

from __future__ import annotations

import pytest
import torch

from f2d2.nets import build_model
from f2d2.objectives import build_objective

SMALL = dict(
    arch="unet",
    channels=8,
    channel_mult=[1, 2],
    attn_resolutions=[4],
    num_res_blocks=1,
    dropout=0.0,
    div_hidden=[16, 8],
)


def small(size=8, **kw):
    torch.manual_seed(0)
    return build_model({**SMALL, "image_size": size, **kw}).eval()


@pytest.mark.parametrize("size,mult,attn", [(8, [1, 2], [4]), (16, [1, 2, 2], [8]), (32, [1, 2, 2, 2], [16])])
def test_output_shapes(size, mult, attn):
    model = small(size, channel_mult=mult, attn_resolutions=attn, div_head=True)
    x = torch.randn(3, 3, size, size)
    out = model(x, torch.rand(3), torch.rand(3))
    assert out.u.shape == x.shape
    assert out.d.shape == (3,)
    assert model.data_shape == (3, size, size)
    assert any(b.attention for b in model.encoder)  # the attention resolution exists at this size


def test_velocity_depends_on_both_times():
    model = small()
    x = torch.randn(2, 3, 8, 8)
    s, t = torch.tensor([0.2, 0.2]), torch.tensor([0.7, 0.7])
    u = model(x, s, t).u
    assert not torch.allclose(u, model(x, s + 0.1, t).u, atol=1e-6)
    assert not torch.allclose(u, model(x, s, t + 0.1).u, atol=1e-6)
    # rows are independent: changing one row's times leaves the other row alone
    u2 = model(x, s, torch.tensor([0.7, 0.9])).u
    torch.testing.assert_close(u2[0], u[0])
    assert not torch.allclose(u2[1], u[1], atol=1e-6)


def test_zero_initialised_head_and_warm_start_keeps_velocity():
    model = small()
    x, s, t = torch.randn(2, 3, 8, 8), torch.rand(2), torch.rand(2)
    u = model(x, s, t).u
    assert model(x, s, t).d is None and not model.has_div_head
    model.add_div_head()
    out = model(x, s, t)
    assert model.has_div_head
    torch.testing.assert_close(out.d, torch.zeros(2))
    torch.testing.assert_close(out.u, u)


def test_divergence_head_gradient_reaches_head_and_trunk():
    model = small(div_head=True).train()
    # the zero last layer blocks gradients to earlier layers; perturb it as after one training step
    torch.nn.init.normal_(model.d_head[-1].weight, std=0.1)
    x, s, t = torch.randn(2, 3, 8, 8), torch.rand(2), torch.rand(2)
    model(x, s, t).d.square().sum().backward()
    for name in (
        "d_head.1.weight",
        "d_head.3.weight",
        "d_head.5.weight",
        "encoder.0.conv_in.weight",
        "emb_mlp.0.weight",
        "decoder.0.conv_in.weight",
    ):
        g = model.get_parameter(name).grad
        assert g is not None and g.abs().sum() > 0, name
    assert model.out_conv.weight.grad is None  # the velocity output is not on the head's path


def test_time_flip_is_the_reversed_convention():
    """A flipped net at (s, t) is the plain net at start time 1 - s with the same step t - s, negated."""
    model = small()
    flipped = small(time_flip=True)
    flipped.load_state_dict(model.state_dict())
    x, s, t = torch.randn(2, 3, 8, 8), torch.tensor([0.1, 0.3]), torch.tensor([0.6, 0.9])
    torch.testing.assert_close(flipped(x, s, t).u, -model(x, 1 - s, 1 - s + (t - s)).u)


def test_time_scale_is_the_times_multiplied():
    """A net with time_scale k at (s, t) is the plain net at (k s, k t)."""
    plain, scaled = small(), small(time_scale=1000.0)
    scaled.load_state_dict(plain.state_dict())
    x, s, t = torch.randn(2, 3, 8, 8), torch.tensor([0.001, 0.0004]), torch.tensor([0.0007, 0.001])
    torch.testing.assert_close(scaled(x, s, t).u, plain(x, 1000 * s, 1000 * t).u)
    assert not torch.allclose(scaled(x, s, t).u, plain(x, s, t).u, atol=1e-4)


@pytest.mark.parametrize("name", ["flow_matching", "shortcut_f2d2", "meanflow_f2d2"])
def test_objectives_run_on_images(name):
    """Every objective (including MeanFlow's JVP and Hutchinson divergences) works on (B, C, H, W) batches."""
    model = small(div_head=True, flow_map=name != "flow_matching").train()
    teacher = small()
    opts = {
        "flow_matching": {},
        "shortcut_f2d2": {"div_source": "self", "div_method": "hutchinson"},
        "meanflow_f2d2": {"div_source": "teacher", "div_method": "hutchinson"},
    }[name]
    objective = build_objective({"name": name, **opts}, teacher=teacher)
    terms = objective(model, torch.randn(4, 3, 8, 8), torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert model.stem.weight.grad.abs().sum() > 0


def test_bad_config_names_the_key():
    with pytest.raises(ValueError, match="channel_mult"):
        build_model({**SMALL, "image_size": 6, "channel_mult": [1, 2, 2]})
    with pytest.raises(ValueError, match="div_hidden"):
        build_model({**SMALL, "image_size": 8, "div_hidden": [4]})
    with pytest.raises(ValueError, match="time_scale = 0"):
        build_model({**SMALL, "image_size": 8, "time_scale": 0})
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\)"):
        small()(torch.randn(1, 3, 16, 16), torch.rand(1), torch.rand(1))


def test_divergence_likelihood_and_sampling_on_image_batches():
    """The shape-generic core on (B, C, H, W): exact vs Hutchinson divergence, K-step and reference likelihood."""
    from f2d2.core.divergence import divergence
    from f2d2.core.likelihood import log_likelihood, reference_log_likelihood
    from f2d2.core.sampling import sample

    model = small(div_head=True, flow_map=True)
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 0.3)
    v, exact = divergence(lambda y: model.velocity(y, t), x, "exact")
    assert v.shape == x.shape and exact.shape == (2,)
    g = torch.Generator().manual_seed(0)
    hutch = torch.stack(
        [divergence(lambda y: model.velocity(y, t), x, "hutchinson", generator=g)[1] for _ in range(400)]
    )
    assert (hutch.mean(0) - exact).abs().max() < 4 * hutch.std(0).max() / 20  # within 4 standard errors
    for div in ("head", "hutchinson"):
        res = log_likelihood(model, x, 2, div=div, generator=g)
        assert res.log_prob.shape == (2,) and torch.isfinite(res.log_prob).all() and res.x0.shape == x.shape
    ref = reference_log_likelihood(model, x, atol=1e-3, rtol=1e-3, div="hutchinson", generator=g)
    assert ref.log_prob.shape == (2,) and torch.isfinite(ref.log_prob).all()
    assert sample(model, torch.randn(2, 3, 8, 8), 2).shape == (2, 3, 8, 8)
