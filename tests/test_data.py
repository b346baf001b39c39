"""The 2D datasets against their closed forms, and the point-file loader's checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from f2d2.data import Checkerboard, DataError, GaussianMixture, PointCloud, load_points, make_dataset


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def on_checkerboard(x: float, y: float, scale: float) -> bool:
    """The support rule, written out independently of the implementation."""
    i, j = math.floor(x / scale), math.floor(y / scale)
    return -2 <= i <= 1 and -2 <= j <= 1 and (i + j) % 2 == 0


# --- checkerboard -------------------------------------------------------------------------------


def test_checkerboard_samples_fill_the_eight_cells_evenly():
    x = Checkerboard().sample(80_000, gen())
    assert x.shape == (80_000, 2) and x.dtype == torch.float32
    logp = Checkerboard().log_prob(x)
    assert logp.shape == (80_000,)
    assert torch.allclose(logp, torch.full_like(logp, -math.log(32)))
    cells, counts = torch.unique(torch.floor(x / 2), dim=0, return_counts=True)
    assert len(cells) == 8
    assert all(on_checkerboard(2 * i + 1, 2 * j + 1, 2.0) for i, j in cells.tolist())
    chi2 = float(((counts - 10_000.0) ** 2 / 10_000.0).sum())
    assert chi2 < 30  # 7 degrees of freedom: P(chi2 > 30) ~ 1e-4
    assert x.mean(0).abs().max() < 0.05  # standard error ~0.008


def test_checkerboard_log_prob_follows_the_parity_rule():
    pts = [(1.0, 3.0), (-1.0, 1.0), (0.5, 0.5), (3.0, 3.0), (-3.0, 3.0), (-3.0, -3.0), (5.0, 0.5), (0.5, -4.5)]
    logp = Checkerboard(2.0).log_prob(torch.tensor(pts))
    on = torch.tensor([on_checkerboard(x, y, 2.0) for x, y in pts])
    assert on.tolist() == [False, False, True, True, False, True, False, False]
    assert torch.all(logp[on] == -math.log(32))
    assert torch.all(logp[~on] == -math.inf)


def test_checkerboard_density_integrates_to_one():
    u = (torch.rand(200_000, 2, generator=gen(1)) * 8 - 4).double()
    integral = Checkerboard().log_prob(u).exp().mean() * 64  # box area 64
    assert abs(float(integral) - 1) < 0.02


@pytest.mark.parametrize("scale", [1.5, 1 / 0.45])
def test_checkerboard_scale_sets_support_and_density(scale):
    x = Checkerboard(scale).sample(20_000, gen())
    assert x.abs().max() <= 2 * scale and x.abs().max() > 1.9 * scale
    assert torch.all(Checkerboard(scale).log_prob(x) == -math.log(8 * scale**2))


@pytest.mark.parametrize("scale", [0, -1.0, float("inf"), True, "2"])
def test_checkerboard_rejects_bad_scale(scale):
    with pytest.raises(DataError, match="scale"):
        Checkerboard(scale)


# --- reproducibility ----------------------------------------------------------------------------


@pytest.fixture
def point_file(tmp_path):
    path = tmp_path / "pts.npy"
    np.save(path, np.random.default_rng(0).normal(size=(50, 2)))
    return path


@pytest.fixture(params=["checkerboard", "gmm", "points"])
def dataset(request, point_file):
    cfg = {"name": request.param}
    if request.param == "points":
        cfg["path"] = str(point_file)
    return make_dataset(cfg)


def test_same_generator_state_gives_same_samples(dataset):
    g = gen(7)
    state = g.get_state()
    torch.manual_seed(0)  # the global RNG must play no part
    a = dataset.sample(500, g)
    g.set_state(state)
    torch.manual_seed(1)
    b = dataset.sample(500, g)
    assert torch.equal(a, b)
    assert not torch.equal(a, dataset.sample(500, g))  # the generator moved on
    assert not torch.equal(a, dataset.sample(500, gen(8)))
    assert a.shape == (500, 2) and a.dtype == torch.float32


# --- Gaussian mixture ---------------------------------------------------------------------------

MEANS, STDS, WEIGHTS = [[0.0, 0.0], [3.0, 1.0], [-2.0, 2.5]], [0.5, 1.0, 0.3], [0.2, 0.5, 0.3]


def test_gmm_preset_density_integrates_to_one():
    data = make_dataset({"name": "gmm"})
    assert data.means.shape == (8, 2)
    assert torch.allclose(data.means.norm(dim=1), torch.full((8,), 4.0, dtype=torch.float64))
    h = 0.05
    ax = torch.arange(-7, 7, h, dtype=torch.float64) + h / 2
    grid = torch.cartesian_prod(ax, ax)
    assert abs(float(data.log_prob(grid).exp().sum() * h * h) - 1) < 1e-3


def test_gmm_log_prob_matches_torch_distributions():
    data = GaussianMixture(MEANS, STDS, WEIGHTS)
    m = torch.tensor(MEANS, dtype=torch.float64)
    s = torch.tensor(STDS, dtype=torch.float64)[:, None].expand(3, 2)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.tensor(WEIGHTS, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(m, s), 1),
    )
    x = torch.tensor([[0.7, -1.2], [2.5, 2.0], [-10.0, 4.0]], dtype=torch.float64)
    assert torch.allclose(data.log_prob(x), ref.log_prob(x), atol=1e-10, rtol=0)


def test_gmm_sample_moments():
    data = GaussianMixture(MEANS, STDS, WEIGHTS)
    x = data.sample(100_000, gen()).double()
    m, s, w = (torch.tensor(v, dtype=torch.float64) for v in (MEANS, STDS, WEIGHTS))
    mean = w @ m
    cov = (w[:, None, None] * (s[:, None, None] ** 2 * torch.eye(2) + m[:, :, None] * m[:, None, :])).sum(0)
    cov = cov - torch.outer(mean, mean)
    assert (x.mean(0) - mean).abs().max() < 0.03
    assert (torch.cov(x.T) - cov).abs().max() < 0.08


def test_gmm_zero_weight_component_is_never_drawn():
    data = GaussianMixture([[0.0, 0.0], [100.0, 100.0]], 1.0, [1.0, 0.0])
    assert data.sample(5000, gen()).max() < 10
    assert torch.isfinite(data.log_prob(torch.tensor([[100.0, 100.0]]))).all()


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"weights": [0.5, 0.6, -0.1]}, "weights"),
        ({"weights": [0.2, 0.2, 0.2]}, "weights"),
        ({"weights": [0.5, 0.5]}, "weights"),
        ({"stds": [0.5, 0.0, 1.0]}, "stds"),
        ({"stds": -1.0}, "stds"),
        ({"means": [[0.0, 0.0, 0.0]]}, "means"),
        ({"means": [[0.0, 0.0], [1.0]]}, "means"),
    ],
)
def test_gmm_rejects_bad_parameters(kwargs, word):
    args = {"means": MEANS, "stds": STDS, "weights": WEIGHTS} | kwargs
    with pytest.raises(DataError, match=word):
        GaussianMixture(**args)


# --- point files --------------------------------------------------------------------------------

ARR = np.random.default_rng(1).normal(size=(20, 2))


def test_npy_round_trip(tmp_path):
    np.save(tmp_path / "a.npy", ARR)
    pts = load_points(tmp_path / "a.npy")
    assert pts.dtype == torch.float32 and pts.shape == (20, 2)
    assert np.array_equal(pts.numpy(), ARR.astype(np.float32))


@pytest.mark.parametrize("header", ["", "x,y\n"])
def test_csv_round_trip(tmp_path, header):
    path = tmp_path / "a.csv"
    path.write_text(header + "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in ARR) + "\n")
    assert np.array_equal(load_points(path).numpy(), ARR.astype(np.float32))


def test_load_points_checks_dim(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 3)))
    assert load_points(tmp_path / "a.npy", dim=3).shape == (4, 3)
    with pytest.raises(DataError, match=r"\(4, 3\).*\(N, 2\)"):
        load_points(tmp_path / "a.npy")


def test_point_cloud_draws_training_rows_uniformly(tmp_path):
    rows = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.save(tmp_path / "a.npy", rows)
    np.save(tmp_path / "test.npy", np.array([[5.0, 5.0]]))  # a test file: all three rows are training rows
    data = PointCloud(tmp_path / "a.npy", test_path=tmp_path / "test.npy")
    assert not data.has_density and data.log_prob(torch.zeros(2, 2)) is None
    x = data.sample(30_000, gen())
    match = (x[:, None, :] == torch.tensor(rows, dtype=torch.float32)).all(-1)
    assert torch.all(match.sum(1) == 1)  # every draw is one of the rows
    assert (match.sum(0) - 10_000).abs().max() < 400  # standard deviation ~82


def _write(path, content):
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)
    return path


NAN = np.zeros((10, 2))
NAN[3, 1] = np.nan
NAN[7, 0] = np.inf


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("missing.npy", None, ["not found"]),
        ("a.txt", "1,2\n", ["unsupported extension", "'.txt'"]),
        ("a.npy", np.ones((5, 3)), ["(5, 3)"]),
        ("a.npy", np.ones(5), ["(5,)"]),
        ("a.npy", np.ones((5, 2, 1)), ["(5, 2, 1)"]),
        ("a.npy", np.array(["a", "b"]), ["dtype"]),
        ("a.npy", np.ones((0, 2)), ["0 rows"]),
        ("a.csv", "", ["0 rows"]),
        ("a.csv", "x,y\n", ["0 rows"]),
        ("a.npy", NAN, ["2 of 10 rows", "NaN", "first bad row: 3"]),
        ("a.csv", "x,y\n1,2\n3,nan\n", ["1 of 2 rows", "first bad row: 1"]),
        ("a.csv", "x,y\n1,2\n3,-inf\n", ["1 of 2 rows", "first bad row: 1"]),
        ("a.csv", "1e300,0\n", ["1 of 1 rows", "first bad row: 0"]),
        ("a.csv", "1,2\n3,abc\n", ["could not parse", "abc"]),
        ("a.csv", "1,2\n3,4,5\n", ["could not parse"]),
        ("a.csv", "x,y\n1,2\n3\n5,6\n", ["could not parse"]),
        ("a.csv", "x,y\n1,2\n3,", ["could not parse"]),  # cut mid-row
        ("a.csv", "1,2,3\n4,5,6\n", ["(2, 3)"]),
        ("a.npy", "not an array", ["could not read"]),
    ],
)
def test_load_points_errors_name_file_and_expected_shape(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        _write(path, content)
    for load in (load_points, PointCloud):
        with pytest.raises(DataError) as err:
            load(path)
        msg = str(err.value)
        assert str(path) in msg and "(N, 2)" in msg
        for w in words:
            assert w in msg


# --- make_dataset -------------------------------------------------------------------------------


def test_make_dataset_builds_each_name(point_file):
    board = make_dataset({"name": "checkerboard", "scale": 3.0})
    assert isinstance(board, Checkerboard) and board.scale == 3.0 and board.dim == 2 and board.has_density
    gmm = make_dataset({"name": "gmm", "means": MEANS, "stds": STDS, "weights": WEIGHTS})
    assert isinstance(gmm, GaussianMixture) and torch.equal(gmm.stds, torch.tensor(STDS, dtype=torch.float64))
    pts = make_dataset({"name": "points", "path": str(point_file)})
    assert isinstance(pts, PointCloud) and pts.train.shape == (40, 2) and pts.test.shape == (10, 2)  # 20% held out


@pytest.mark.parametrize(
    "cfg, words",
    [
        ({"name": "moons"}, ["'moons'", "checkerboard", "gmm", "points"]),
        ({"name": "checkerboard", "radius": 1}, ["'radius'", "scale"]),
        ({"name": "gmm", "std": 1}, ["'std'", "stds"]),
        ({"name": "points"}, ["'path'"]),
        ({"scale": 2.0}, ["name"]),
    ],
)
def test_make_dataset_errors_name_the_bad_value(cfg, words):
    with pytest.raises(DataError) as err:
        make_dataset(cfg)
    for w in words:
        assert w in str(err.value)
