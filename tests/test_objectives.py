"""Flow-map objectives: MeanFlow's JVP target, semigroup/Eulerian residuals of exact and perturbed maps,
one training step of every objective, warm start with a new divergence head, and self-guidance."""

from __future__ import annotations

import pytest
import torch

from analytic import GaussianFlow
from f2d2.core.guidance import predicted_log_likelihood, self_guided_noise
from f2d2.io.checkpoint import load_model, warm_start
from f2d2.nets import FlowMapNet, FlowMapOutput, MLPFlowMap
from f2d2.objectives import OBJECTIVES, MeanFlow, Objective, Shortcut, build_objective, describe
from f2d2.objectives.meanflow import eulerian_targets
from f2d2.objectives.semigroup import heun_targets, ode_targets, semigroup_targets

MU, SIGMA = [0.5, -1.0], 0.7


def _mlp(div_head: bool = True, div_scale: float = 3.0) -> MLPFlowMap:
    torch.manual_seed(0)
    model = MLPFlowMap(dim=2, hidden=32, depth=2, time_freqs=2, div_head=div_head, div_scale=div_scale, flow_map=True)
    if div_head:  # give the zero-initialised head something to differentiate
        torch.nn.init.normal_(model.d_head.weight, std=0.5)
    return model


class Perturbed(FlowMapNet):
    """An exact map with a smooth error added to both heads."""

    def __init__(self, exact: GaussianFlow):
        super().__init__(div_scale=exact.div_scale, flow_map=True)
        self.exact, self.data_shape, self.has_div_head = exact, exact.data_shape, True

    def forward(self, x, s, t):
        out = self.exact(x, s, t)
        bump = 0.2 * torch.sin(3 * s + 2 * t)[:, None] * x
        return FlowMapOutput(out.u + bump, out.d + 0.2 * (s - t) ** 2 + 0.1 * x[:, 0])


def _points(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g)
    t = torch.rand(n, generator=g)
    x = torch.randn(n, 2, generator=g) * 1.5
    return x, s, t


def test_meanflow_jvp_target_matches_finite_differences():
    model = _mlp().double()
    x, s, t = (a.double() for a in _points(64))
    v = torch.randn_like(x)
    div_v = torch.randn(64, dtype=torch.float64)
    _, u_target, d_target = eulerian_targets(model, x, s, t, v, div_v)
    eps = 1e-5
    with torch.no_grad():
        plus, minus = model(x + eps * v, s + eps, t), model(x - eps * v, s - eps, t)
    du = (plus.u - minus.u) / (2 * eps)
    dd = (plus.d - minus.d) / (2 * eps)
    h = t - s
    assert torch.allclose(u_target, v + h[:, None] * du, atol=1e-7)
    assert torch.allclose(d_target, div_v / model.div_scale + h * dd, atol=1e-7)
    assert (du.abs() > 1e-3).any()  # the derivative is not trivially zero


def _residuals(model: FlowMapNet, x, s, t):
    exact = GaussianFlow(MU, SIGMA, flow_map=True).to(x.dtype)
    out = model(x, s, t)
    u_sg, d_sg = semigroup_targets(model, x, s, t)
    v = exact.velocity(x, s)
    div_v = exact(x, s, s).d * exact.div_scale
    _, u_eu, d_eu = eulerian_targets(model, x, s, t, v, div_v)
    return {
        "semigroup_u": (out.u - u_sg).abs().max().item(),
        "semigroup_d": (out.d - d_sg).abs().max().item(),
        "eulerian_u": (out.u - u_eu).abs().max().item(),
        "eulerian_d": (out.d - d_eu).abs().max().item(),
    }


def test_exact_flow_map_has_zero_residuals_and_a_perturbed_one_does_not():
    x, s, t = (a.double() for a in _points())
    exact = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=4.0).double()
    for name, value in _residuals(exact, x, s, t).items():
        assert value < 1e-8, name
    for name, value in _residuals(Perturbed(exact), x, s, t).items():
        assert value > 1e-2, name


def test_from_data_moves_a_share_of_the_steps_to_start_at_the_data():
    """objective.from_data: the same step sizes, a share of them backward from s = 1; MeanFlow's tangent pairs
    (s = t) stay; a share outside [0, 1), or forward-only steps, are refused by name."""
    like = torch.zeros(1)
    for name, times in (("shortcut_distill_f2d2", "semigroup_times"), ("meanflow_f2d2", "times")):
        plain = getattr(describe({"name": name, "from_data": 0.0}), times)(4000, torch.Generator().manual_seed(3), like)
        moved = getattr(describe({"name": name, "from_data": 0.5}), times)(4000, torch.Generator().manual_seed(3), like)
        same_steps = torch.allclose((plain[1] - plain[0]).abs(), (moved[1] - moved[0]).abs(), atol=1e-6)
        assert same_steps, name
        on_map = plain[0] != plain[1]
        at_data = (moved[0] == 1) & on_map
        assert 0.4 < at_data.float().sum() / on_map.sum() < 0.65, name
        assert torch.allclose(moved[1][at_data], 1 - (plain[1] - plain[0]).abs()[at_data]), name  # backward
        assert torch.equal(moved[0][~on_map], plain[0][~on_map]), name  # tangent pairs untouched
    with pytest.raises(ValueError, match=r"from_data = 1.0; expected a number in \[0, 1\)"):
        Shortcut(from_data=1.0)
    with pytest.raises(ValueError, match="from_data = 0.5 .* needs two_way: true"):
        MeanFlow(from_data=0.5, two_way=False)


def test_heun_base_targets_are_second_order_in_the_step():
    """objective.base_step heun: an exact map's Heun targets are off by O(d^2) (4x less when the step halves),
    its instantaneous fields (a one-sided rule) by O(d); an unknown base step is refused by name."""
    exact = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0).double()
    x, s, _ = (a.double() for a in _points(128))
    s = 0.5 + 0.5 * s
    heun, one_sided = [], []
    for d in (1 / 4, 1 / 8):
        t = s - d  # backward steps, as the likelihood takes them
        out, start = exact(x, s, t), exact(x, s, s)
        u, dd = heun_targets(exact, x, s, t)
        heun.append(max((u - out.u).abs().max().item(), (dd - out.d).abs().max().item()))
        one_sided.append(max((start.u - out.u).abs().max().item(), (start.d - out.d).abs().max().item()))
    assert heun[0] > 1e-6 and heun[0] / heun[1] > 3.5 and one_sided[0] / one_sided[1] < 2.5
    assert heun[1] < 0.1 * one_sided[1]
    with pytest.raises(ValueError, match="base_step = 'simpson'"):
        Shortcut(base_step="simpson")


def test_ode_base_targets_integrate_the_velocity_along_its_path():
    """objective.base_step ode: an exact map's step equals its velocity's ODE over the step; the midpoint substeps'
    targets are off by O(h^2) in the substep h (4x less when the substeps double) and far closer than Heun's rule
    over the same step; without a head the D target is None."""
    exact = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0).double()
    x, s, _ = (a.double() for a in _points(128))
    s, d = 0.5 + 0.5 * s, 1 / 4
    t = s - d
    out, g = exact(x, s, t), torch.Generator().manual_seed(0)
    errs = []
    for n in (4, 8):
        u, dd = ode_targets(exact, x, s, t, exact.div_scale, "exact", g, substeps=n)
        errs.append(max((u - out.u).abs().max().item(), (dd - out.d).abs().max().item()))
    u, dd = heun_targets(exact, x, s, t)
    heun = max((u - out.u).abs().max().item(), (dd - out.d).abs().max().item())
    assert errs[0] > 1e-9 and 3.5 < errs[0] / errs[1] < 4.5 and errs[1] < 0.05 * heun
    assert ode_targets(exact, x, s, t, None, "exact", g)[1] is None


def test_ode_base_step_integrates_the_velocity_the_divergence_comes_from():
    """With base_step ode the finest steps' targets come from the objective's velocity_source: the model's own velocity
    (Shortcut-F2D2, div_source self: an exact map's semigroup terms stay ~0) or the teacher's (div_source teacher: a
    teacher of another flow moves them, which the paper's two half steps never would)."""
    exact = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0).double()
    other = GaussianFlow(MU, 1.5 * SIGMA, flow_map=False).double()
    x1 = (torch.tensor(MU) + SIGMA * torch.randn(256, 2, generator=torch.Generator().manual_seed(1))).double()
    opts = dict(f2d2=True, semigroup_fraction=0.5, semigroup_log2=1, time_grid="dyadic")

    def sg_terms(**kw):
        terms = Shortcut(**opts, **kw)(exact, x1, torch.Generator().manual_seed(2))
        return terms["sg"].item(), terms["sg_div"].item()

    assert max(sg_terms(div_source="self", base_step="ode")) < 1e-5
    assert max(sg_terms(div_source="teacher", teacher=other, base_step="halves")) < 1e-12
    assert min(sg_terms(div_source="teacher", teacher=other, base_step="ode")) > 1e-3


def test_exact_map_zeroes_the_self_consistency_and_distill_terms():
    exact = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0)
    teacher = GaussianFlow(MU, SIGMA, flow_map=False)
    x1 = torch.tensor(MU) + SIGMA * torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    terms = Shortcut(distill=True, f2d2=True, teacher=teacher, div_source="teacher")(exact, x1, g)
    for name in ("tangent", "sg", "div", "sg_div"):
        assert terms[name] < 1e-8, name
    # Against the conditional velocity x1 - x0 the tangent term is the irreducible flow-matching variance.
    assert Shortcut(f2d2=False)(exact, x1, g)["tangent"] > 1e-2


def test_exact_map_zeroes_meanflow_terms_with_the_teacher_tangent():
    exact = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0).double()
    teacher = GaussianFlow(MU, SIGMA, flow_map=False).double()
    x1 = (torch.tensor(MU) + SIGMA * torch.randn(512, 2, generator=torch.Generator().manual_seed(1))).double()
    distill = MeanFlow(f2d2=True, teacher=teacher, tangent="teacher", map_fraction=1.0)
    terms = distill(exact, x1, torch.Generator().manual_seed(2))
    assert terms["mf"] < 1e-12 and terms["mf_div"] < 1e-12
    # The conditional tangent x1 - x0 leaves the flow-matching variance in the velocity term.
    conditional = MeanFlow(f2d2=True, teacher=teacher, map_fraction=1.0)
    assert conditional(exact, x1, torch.Generator().manual_seed(2))["mf"] > 1e-2
    with pytest.raises(ValueError, match="'meanflow' needs objective.teacher"):
        build_objective({"name": "meanflow", "tangent": "teacher"})


def test_meanflow_semigroup_term_vanishes_for_an_exact_map_and_adds_to_the_loss():
    """semigroup_fraction moves that share of the batch to Shortcut's semigroup term on dyadic steps up to the
    full step: zero for an exact map, positive for a perturbed one, and summed into the loss with lambda."""
    teacher = GaussianFlow(MU, SIGMA, flow_map=False).double()
    x1 = (torch.tensor(MU) + SIGMA * torch.randn(512, 2, generator=torch.Generator().manual_seed(1))).double()
    kw = dict(f2d2=True, teacher=teacher, tangent="teacher", map_fraction=1.0, lam=0.5)
    objective = MeanFlow(**kw, semigroup_fraction=0.25, semigroup_log2=2)
    exact = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0).double()
    terms = objective(exact, x1, torch.Generator().manual_seed(2))
    assert all(terms[k] < 1e-12 for k in ("mf", "mf_div", "sg", "sg_div"))
    perturbed = Perturbed(GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0)).double()
    terms = objective(perturbed, x1, torch.Generator().manual_seed(2))
    assert terms["sg"] > 1e-4 and terms["sg_div"] > 1e-4
    assert torch.allclose(terms["loss"], terms["mf"] + terms["sg"] + 0.5 * (terms["mf_div"] + terms["sg_div"]))
    assert set(MeanFlow(**kw)(perturbed, x1, torch.Generator().manual_seed(2))) == {"loss", "mf", "mf_div"}
    s, t = objective.semigroup_times(4000, torch.Generator().manual_seed(0), torch.zeros(1))
    gaps = (t - s).abs()
    assert set(gaps.unique().tolist()) == {1.0, 0.5, 0.25}
    assert torch.equal(torch.remainder(torch.minimum(s, t), gaps), torch.zeros_like(s))
    assert 0.4 < (s > t).float().mean() < 0.6
    with pytest.raises(ValueError, match="semigroup_fraction = 1.0"):
        MeanFlow(semigroup_fraction=1.0)
    with pytest.raises(ValueError, match="semigroup_log2 = -1"):
        MeanFlow(semigroup_log2=-1)


class LongJumpsOff(Perturbed):
    """An exact map whose D is off by (|t - s| - 0.3)^2 on jumps longer than 0.3 (exact, with its s-derivative,
    on the shorter ones)."""

    def forward(self, x, s, t):
        out = self.exact(x, s, t)
        return FlowMapOutput(out.u, out.d + torch.relu((t - s).abs() - 0.3) ** 2)


def test_meanflow_div_max_gap_leaves_the_longer_jumps_to_the_semigroup_term():
    """div_max_gap g: L_MF-div is the mean over the pairs with |t - s| <= g alone, so a head off only on longer
    jumps has L_MF-div 0 with g = 0.3 and not with g = 1, while the semigroup term still sees the longer jumps;
    g < 1 with no semigroup term, and g out of (0, 1], are refused by name."""
    teacher = GaussianFlow(MU, SIGMA, flow_map=False).double()
    x1 = (torch.tensor(MU) + SIGMA * torch.randn(512, 2, generator=torch.Generator().manual_seed(1))).double()
    model = LongJumpsOff(GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0)).double()
    kw = dict(f2d2=True, teacher=teacher, tangent="teacher", map_fraction=1.0, semigroup_fraction=0.25)
    short = MeanFlow(**kw, div_max_gap=0.3)(model, x1, torch.Generator().manual_seed(2))
    every = MeanFlow(**kw)(model, x1, torch.Generator().manual_seed(2))
    assert short["mf_div"] < 1e-12 < 1e-4 < every["mf_div"]
    assert short["sg_div"] > 1e-4 and torch.equal(short["sg_div"], every["sg_div"])
    assert torch.allclose(short["loss"], short["mf"] + short["sg"] + short["mf_div"] + short["sg_div"])
    with pytest.raises(ValueError, match="div_max_gap = 0.3 .* semigroup_fraction = 0"):
        MeanFlow(f2d2=True, div_max_gap=0.3)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=f"div_max_gap = {bad}"):
            MeanFlow(f2d2=True, semigroup_fraction=0.25, div_max_gap=bad)


def test_shortcut_f2d2_can_take_its_own_velocity_from_its_frozen_start():
    """self_source 'start': the tangent target and the divergence (div_source self) come from the frozen start
    network, not from x1 - x0 and the live network: an exact map with an exact start zeroes every term."""
    exact = GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0)
    start = GaussianFlow(MU, SIGMA, flow_map=False)
    x1 = torch.tensor(MU) + SIGMA * torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    kw = dict(f2d2=True, div_source="self", semigroup_log2=3)
    frozen = Shortcut(**kw, self_source="start", start=start)
    assert frozen.needs_start and not frozen.needs_teacher
    terms = frozen(exact, x1, torch.Generator().manual_seed(2))
    for name in ("tangent", "sg", "div", "sg_div"):
        assert terms[name] < 1e-8, name
    assert Shortcut(**kw)(exact, x1, torch.Generator().manual_seed(2))["tangent"] > 1e-2  # live: x1 - x0
    # A live network that is off: its error, not its own outputs, is what the frozen start's targets measure.
    off = Perturbed(exact)
    assert Shortcut(**kw, self_source="start", start=start)(off, x1, torch.Generator().manual_seed(2))["div"] > 1e-3
    with pytest.raises(ValueError, match="needs the frozen start network"):
        build_objective({"name": "shortcut_f2d2", "div_source": "self", "self_source": "start"})
    with pytest.raises(ValueError, match="self_source = 'ema'"):
        Shortcut(self_source="ema")
    with pytest.raises(ValueError, match=r"self_source applies only with distill = False"):
        Shortcut(distill=True, self_source="start")
    with pytest.raises(ValueError, match=r"no option\(s\) \['start'\]"):
        describe({"name": "shortcut_f2d2", "start": "x.pt"})


class Scaled(Perturbed):
    """Perturbed with its error multiplied by ``k``."""

    def __init__(self, exact: GaussianFlow, k: float):
        super().__init__(exact)
        self.k = k

    def forward(self, x, s, t):
        out, err = self.exact(x, s, t), super().forward(x, s, t)
        return FlowMapOutput(out.u + self.k * (err.u - out.u), out.d + self.k * (err.d - out.d))


def test_meanflow_adaptive_weight_evens_out_the_points_errors():
    """adaptive_p = 0 is the plain MSE that the logged terms report; with p = 1 each point's error e counts
    as e / (e + 1e-3) < 1, so errors 10x larger raise the plain loss ~100x and the weighted one barely."""
    teacher = GaussianFlow(MU, SIGMA, flow_map=False).double()
    x1 = (torch.tensor(MU) + SIGMA * torch.randn(256, 2, generator=torch.Generator().manual_seed(1))).double()
    kw = dict(f2d2=True, teacher=teacher, tangent="teacher", map_fraction=1.0, lam=0.5)
    losses = {}
    for k in (1.0, 10.0):
        model = Scaled(GaussianFlow(MU, SIGMA, flow_map=True, div_scale=2.0), k).double()
        plain = MeanFlow(**kw)(model, x1, torch.Generator().manual_seed(2))
        even = MeanFlow(**kw, adaptive_p=1.0)(model, x1, torch.Generator().manual_seed(2))
        assert torch.allclose(plain["loss"], plain["mf"] + 0.5 * plain["mf_div"])
        assert torch.allclose(even["mf"], plain["mf"]) and torch.allclose(even["mf_div"], plain["mf_div"])
        assert 0 < float(even["loss"]) < 1.5  # below 1 + lam
        losses[k] = float(plain["loss"]), float(even["loss"])
    assert losses[10.0][0] > 50 * losses[1.0][0]
    assert losses[10.0][1] < 1.5 * losses[1.0][1]
    with pytest.raises(ValueError, match="adaptive_p = -1"):
        MeanFlow(adaptive_p=-1)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_takes_a_training_step(name, tmp_path):
    teacher = _mlp(div_head=False)
    teacher.flow_map = False
    described = describe({"name": name})
    model = _mlp(div_head=described.trains_div_head)
    objective = build_objective({"name": name}, teacher=teacher if described.needs_teacher else None)
    x1 = torch.randn(64, 2)
    before = [p.detach().clone() for p in model.parameters()]
    terms = objective(model, x1, torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["loss"]) and terms["loss"] > 0
    terms["loss"].backward()
    torch.optim.SGD(model.parameters(), lr=1e-2).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    expected = {"flow_matching": {"fm"}, "meanflow": {"mf"}, "meanflow_f2d2": {"mf", "mf_div"}}.get(
        name, {"tangent", "sg"} | ({"div", "sg_div"} if described.trains_div_head else set())
    )
    assert set(terms) - {"loss"} == expected
    cls = OBJECTIVES[name].build
    assert expected <= set(cls.TERMS)
    assert expected & set(cls.DIVERGENCE_TERMS) == ({t for t in expected if "div" in t})


def test_objective_options_are_checked():
    with pytest.raises(ValueError, match="needs objective.teacher"):
        build_objective({"name": "shortcut_distill"})
    with pytest.raises(ValueError, match=r"no option\(s\) \['lamda'\]"):
        build_objective({"name": "shortcut_f2d2", "div_source": "self", "lamda": 1})
    with pytest.raises(ValueError, match="'shortcut_f2d' is unknown"):
        describe({"name": "shortcut_f2d"})


# name -> (needs_teacher, trains_div_head, flow_map) with the default options
DESCRIPTIONS = {
    "flow_matching": (False, False, False),
    "shortcut": (False, False, True),
    "shortcut_distill": (True, False, True),
    "shortcut_f2d2": (True, True, True),  # div_source defaults to "teacher"
    "shortcut_distill_f2d2": (True, True, True),
    "meanflow": (False, False, True),
    "meanflow_f2d2": (True, True, True),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objectives_describe_themselves_without_a_teacher(name):
    path = {"teacher": "no/such/checkpoint.pt"} if OBJECTIVES[name].takes_teacher else {}
    objective = describe({"name": name, **path})  # the path is not read
    assert isinstance(objective, Objective) and getattr(objective, "teacher", None) is None
    assert (objective.needs_teacher, objective.trains_div_head, objective.flow_map) == DESCRIPTIONS[name]
    assert objective.fits_steps(1) and objective.fits_steps(4)
    assert objective.fits_steps(3) == (not name.startswith("shortcut"))


def test_options_change_the_description():
    assert not describe({"name": "shortcut_f2d2", "div_source": "self"}).needs_teacher
    assert describe({"name": "meanflow", "tangent": "teacher"}).needs_teacher
    assert not describe({"name": "meanflow_f2d2", "div_source": "self"}).needs_teacher
    grid = describe({"name": "shortcut", "semigroup_log2": 2})
    assert [k for k in range(1, 10) if grid.fits_steps(k)] == [1, 2, 4]
    assert "power of two <= 4" in grid.steps_rule()
    defaults = {o.name: o.default for o in OBJECTIVES["shortcut"].options}
    assert defaults["semigroup_log2"] == 7
    assert (
        "distill" not in defaults
        and "lam" not in defaults
        and "lam" in {o.name for o in OBJECTIVES["meanflow_f2d2"].options}
    )


def test_forward_only_training_draws_only_forward_steps():
    mf = MeanFlow(two_way=False, map_fraction=1.0)
    s, t = mf.times(2000, torch.Generator().manual_seed(0), torch.zeros(1))
    assert (s <= t).all()
    s, t = MeanFlow(two_way=True, map_fraction=1.0).times(2000, torch.Generator().manual_seed(0), torch.zeros(1))
    assert 0.4 < (s > t).float().mean() < 0.6


@pytest.mark.parametrize("two_way", [False, True])
def test_dyadic_time_grid_starts_each_step_at_a_multiple_of_its_size(two_way):
    def draw(grid):
        sc = Shortcut(time_grid=grid, two_way=two_way, semigroup_log2=4)
        return sc.semigroup_times(4000, torch.Generator().manual_seed(0), torch.zeros(1, dtype=torch.float64))

    s, t = draw("dyadic")
    d = (t - s).abs()
    lo = torch.minimum(s, t)
    assert set(d.tolist()) == {2.0**-k for k in range(5)} and (lo >= 0).all() and (lo + d <= 1).all()
    assert torch.equal(torch.remainder(lo, d), torch.zeros_like(lo))  # on the grid of its own step size
    assert len(set(lo[d == 2**-4].tolist())) == 16  # every start of the finest grid is drawn
    assert ((s > t).any()) == two_way
    s, t = draw("continuous")
    d = (t - s).abs()
    assert (torch.remainder(torch.minimum(s, t), d)[d < 1] > 0).all()  # a step of size 1 starts at 0 either way
    with pytest.raises(ValueError, match="time_grid = 'grid'"):
        Shortcut(time_grid="grid")


def test_warm_start_adds_a_zero_divergence_head(tmp_path):
    from f2d2.config.resolve import resolve_run
    from f2d2.training.loop import train

    run = resolve_run(
        {
            "model": {"hidden": 32, "depth": 2, "time_freqs": 2},
            "train": {"steps": 3, "batch_size": 32, "log_every": 1, "ckpt_every": 3},
        }
    )
    ckpt = train(run, tmp_path / "teacher", progress=False)
    teacher = load_model(ckpt)
    student = MLPFlowMap(dim=2, hidden=32, depth=2, time_freqs=2, div_head=True, flow_map=True)
    warm_start(student, ckpt)
    x, s, t = _points(16)
    assert torch.equal(student(x, s, s).u, teacher(x, s, s).u)
    assert torch.equal(student(x, s, t).d, torch.zeros(16))
    wrong = MLPFlowMap(dim=2, hidden=64, depth=2, time_freqs=2, div_head=True)
    with pytest.raises(Exception, match="shape mismatches"):
        warm_start(wrong, ckpt)


def test_self_guidance_lowers_the_predicted_nll():
    model = _mlp()
    eps = torch.randn(256, 2, generator=torch.Generator().manual_seed(3))
    before = -predicted_log_likelihood(model, eps)
    guided = self_guided_noise(model, eps, lr=0.05, steps=5)
    after = -predicted_log_likelihood(model, guided)
    assert not torch.equal(guided, eps)
    assert after.mean() < before.mean() - 1e-3
    assert (after < before).float().mean() > 0.9


@pytest.mark.parametrize("power", [0.0, 1.0, 2.0])
def test_div_step_power_weighs_the_semigroup_divergence_rows_by_step_size(power):
    """objective.div_step_power p: L_SG-div is the mean of the rows' squared errors times |t - s|^p / mean |t - s|^p
    (p = 0: the plain mean); L_SG is not weighted; a negative power is refused by name."""
    model = _mlp()
    x1 = torch.tensor(MU) + SIGMA * torch.randn(256, 2, generator=torch.Generator().manual_seed(3))
    x0 = torch.randn(256, 2, generator=torch.Generator().manual_seed(4))
    obj = Shortcut(f2d2=True, semigroup_log2=3, div_step_power=power)
    terms = obj.semigroup_terms(model, x0, x1, torch.Generator().manual_seed(5))
    s, t = obj.semigroup_times(256, torch.Generator().manual_seed(5), x1)
    x = (1 - s[:, None]) * x0 + s[:, None] * x1
    u_target, d_target = semigroup_targets(model, x, s, t)
    out = model(x, s, t)
    err = (out.d - d_target).pow(2)
    w = (t - s).abs() ** power
    assert torch.allclose(terms["sg_div"], (err * w / w.mean()).mean(), rtol=1e-5)
    assert torch.allclose(terms["sg"], (out.u - u_target).pow(2).mean(), rtol=1e-5)
    if power:
        assert not torch.allclose(terms["sg_div"], err.mean(), rtol=1e-3)  # the steps differ in size
    with pytest.raises(ValueError, match="div_step_power = -1"):
        Shortcut(div_step_power=-1)
