"""f2d2.data.jitter: each factor does what its docstring says, the draw is seeded, and objective.teacher_path
adds the jittered images to the path's points (refused by name where it cannot)."""

from __future__ import annotations

import pytest
import torch

from analytic import GaussianFlow
from f2d2.data import make_dataset
from f2d2.data.jitter import jitter
from f2d2.objectives import describe
from f2d2.objectives.base import ObjectiveError
from f2d2.training import path_cache

SAME = {"saturation": [1.0, 1.0], "contrast": [1.0, 1.0], "brightness": [1.0, 1.0], "noise": 0.0, "flat": 0.0}
WIDE = {"saturation": [0.0, 2.0], "contrast": [0.0, 1.5], "brightness": [0.0, 1.0], "noise": 12.0, "flat": 0.25}


def _images(n: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_unit_factors_keep_the_images():
    x = _images()
    assert torch.equal(jitter(x, SAME, torch.Generator().manual_seed(1)), x)


def test_each_factor():
    x, g = _images(), torch.Generator().manual_seed(1)
    grey = jitter(x, {**SAME, "saturation": [0.0, 0.0]}, g)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    torch.testing.assert_close(grey[:, 0].float(), x.float().mean(1).round(), atol=0, rtol=0)
    flat = jitter(x, {**SAME, "flat": 1.0, "noise": 50.0}, g)
    level = x.float().mean((1, 2, 3)).round()
    assert torch.equal(flat.float(), level[:, None, None, None].expand_as(flat))  # constant, and no noise
    assert int(jitter(x, {**SAME, "brightness": [0.0, 0.0]}, g).max()) == 0
    halved = jitter(x, {**SAME, "contrast": [0.5, 0.5]}, g).float()
    spread = (halved - halved.mean((1, 2, 3), keepdim=True)).std() / (x.float() - level[:, None, None, None]).std()
    assert abs(float(spread) - 0.5) < 0.02
    noisy = jitter(x, {**SAME, "noise": 12.0}, g)
    assert not torch.equal(noisy, x) and (noisy.float() - x.float()).abs().max() > 1


def test_the_draw_is_seeded_and_stays_in_range():
    x = _images(256)
    a, b = (jitter(x, WIDE, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a, b) and a.dtype == torch.uint8
    assert not torch.equal(a, jitter(x, WIDE, torch.Generator().manual_seed(6)))
    flat = (a.float().std((1, 2, 3)) == 0).float().mean()
    assert 0.15 < float(flat) < 0.35  # the share made flat, 0.25 (256 images)


def test_the_path_adds_the_jittered_images(tmp_path, monkeypatch):
    images = make_dataset({"name": "patches", "size": 8})
    options = {"points": 6, "grid": 2, "rows": 4, "weight": 1.0, "tol": 1e-3}
    seen = []
    monkeypatch.setattr(
        path_cache.teacher_path, "solve", lambda teacher, x1, grid, **k: seen.append(x1) or _fake(x1, grid, k)
    )
    teacher = GaussianFlow([0.0] * 192, 0.5)
    plain = path_cache.prepare(tmp_path / "a", options, "exact", teacher, images, 0, "cpu")
    jittered = path_cache.prepare(
        tmp_path / "b", {**options, "jitter": {**WIDE, "points": 10}}, "exact", teacher, images, 0, "cpu"
    )
    assert seen[0].shape == (6, 3, 8, 8) and seen[1].shape == (16, 3, 8, 8)
    bins = [((x + 1) * 128).floor() for x in seen]  # the pixels, before dequantization
    assert torch.equal(bins[0], bins[1][:6])  # the training images first, the same draw
    assert jittered.key["jitter"]["points"] == 10 and plain.key["jitter"] is None
    path_cache.prepare(
        tmp_path / "b", {**options, "jitter": {**WIDE, "points": 11}}, "exact", teacher, images, 0, "cpu"
    )
    assert len(seen) == 3  # another jitter: solved again


def _fake(x1, grid, k):
    return path_cache.teacher_path.TeacherPath(torch.stack([x1] * (grid + 1)), torch.zeros(grid, len(x1)), k["key"])


def test_bad_jitter_is_refused_by_name(tmp_path):
    base = {"points": 4, "grid": 2, "rows": 2, "weight": 1.0, "tol": 1e-3}
    with pytest.raises(ObjectiveError, match=r"jitter.contrast = \[2.0, 1.0\]; expected \[low, high\]"):
        describe(
            {
                "name": "shortcut_distill_f2d2",
                "teacher_path": {**base, "jitter": {**WIDE, "points": 4, "contrast": [2.0, 1.0]}},
            }
        )
    with pytest.raises(ObjectiveError, match="flat"):
        describe(
            {"name": "shortcut_distill_f2d2", "teacher_path": {**base, "jitter": {**WIDE, "points": 4, "flat": 2}}}
        )
    with pytest.raises(ObjectiveError, match="noise"):
        describe({"name": "shortcut_distill_f2d2", "teacher_path": {**base, "jitter": {"points": 4}}})
    options = {**base, "jitter": {**WIDE, "points": 4}}
    with pytest.raises(ValueError, match=r"jitter = .* jitters images, but the run's data Checkerboard"):
        path_cache.prepare(
            tmp_path, options, "exact", GaussianFlow([0.0, 0.0], 0.5), make_dataset({"name": "checkerboard"}), 0, "cpu"
        )
    images = make_dataset({"name": "patches", "size": 8})
    n = len(images.train_pixels())
    with pytest.raises(ValueError, match=rf"teacher_path.jitter.points = {n + 1} is more than the {n} training"):
        path_cache.prepare(
            tmp_path,
            {**base, "jitter": {**WIDE, "points": n + 1}},
            "exact",
            GaussianFlow([0.0] * 192, 0.5),
            images,
            0,
            "cpu",
        )
