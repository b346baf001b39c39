"""objective.teacher_path: the teacher's path is solved right (closed form), its term is zero for the exact
flow map and not for another, the path is kept and reused by the run that solved it, and bad settings are
refused by name."""

from __future__ import annotations

import json

import pytest
import torch

from analytic import GaussianFlow
from f2d2.config.resolve import resolve_run
from f2d2.data import make_dataset
from f2d2.io.checkpoint import load_checkpoint
from f2d2.objectives import describe
from f2d2.objectives import teacher_path as tp
from f2d2.objectives.base import ObjectiveError
from f2d2.training import path_cache
from f2d2.training.loop import train

OPTIONS = {"points": 40, "grid": 4, "rows": 64, "weight": 2.0, "tol": 1e-6}
MU, SIGMA = [0.5, -1.0], 0.3


def _path(grid: int = 4) -> tp.TeacherPath:
    teacher = GaussianFlow(MU, SIGMA, flow_map=False)
    x1 = torch.tensor(MU) + SIGMA * torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    return tp.solve(teacher, x1, grid, tol=1e-7, div="exact", generator=torch.Generator(), key={})


def test_the_path_is_the_teachers_flow_and_each_segments_mean_divergence():
    exact = GaussianFlow(MU, SIGMA)
    path = _path(4)
    assert path.x.shape == (5, 40, 2) and path.div.shape == (4, 40)
    for k in range(4):
        s, t = torch.full((40,), 1 - k / 4), torch.full((40,), 1 - (k + 1) / 4)
        out = exact(path.x[k], s, t)
        torch.testing.assert_close(path.x[k + 1], path.x[k] + (t - s)[:, None] * out.u, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(path.div[k], out.d, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backward", [True, False], ids=["backward", "forward"])
def test_the_term_vanishes_for_the_exact_flow_map_only(backward):
    path = _path(8)
    g = torch.Generator().manual_seed(1)
    assert float(tp.path_loss(GaussianFlow(MU, SIGMA), path, 256, g, backward=backward)) < 1e-8
    scaled = GaussianFlow(MU, SIGMA, div_scale=2.0)  # a head predicting div / 2: its target is div / 2 too
    assert float(tp.path_loss(scaled, path, 256, g, backward=backward)) < 1e-8
    other = GaussianFlow(MU, 0.5)  # another data sigma: another mean divergence on every step
    assert float(tp.path_loss(other, path, 256, g, backward=backward)) > 1e-2


def test_the_rows_draw_every_step_size_of_the_grid():
    path = _path(4)
    seen = set()

    class Recorder(GaussianFlow):
        def forward(self, x, s, t):
            seen.update(zip(s.tolist(), t.tolist()))
            return super().forward(x, s, t)

    tp.path_loss(Recorder(MU, SIGMA), path, 400, torch.Generator().manual_seed(2), backward=True)
    steps = {(s, t) for s in (1, 0.75, 0.5, 0.25) for t in (0.75, 0.5, 0.25, 0) if s > t}
    dyadic = {(1, 0), (1, 0.5), (0.5, 0), (1, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0)}
    assert seen == dyadic and seen <= steps


def test_prepare_keeps_the_path_and_solves_again_only_for_other_settings(tmp_path, monkeypatch):
    data = make_dataset({"name": "checkerboard"})
    teacher = GaussianFlow(MU, SIGMA, flow_map=False)
    cpu = torch.device("cpu")
    first = path_cache.prepare(tmp_path, OPTIONS, "exact", teacher, data, 0, cpu)
    again = path_cache.prepare(tmp_path / "fresh", OPTIONS, "exact", teacher, data, 0, cpu)
    assert torch.equal(first.x, again.x) and torch.equal(first.div, again.div)  # seeded
    torch.testing.assert_close(first.x[0], data.sample(40, torch.Generator().manual_seed(path_cache.PATH_STREAM)))

    unwritten = path_cache.prepare(tmp_path / "other rank", OPTIONS, "exact", teacher, data, 0, cpu, write=False)
    assert torch.equal(unwritten.x, first.x) and not (tmp_path / "other rank" / path_cache.FILE).exists()

    def no_solve(*args, **kwargs):
        raise AssertionError("solved again")

    monkeypatch.setattr(tp, "solve", no_solve)
    kept = path_cache.prepare(tmp_path, OPTIONS, "exact", teacher, data, 0, cpu)
    assert torch.equal(kept.x, first.x)
    for options, seed, flow in [
        ({**OPTIONS, "grid": 2}, 0, teacher),
        (OPTIONS, 1, teacher),
        (OPTIONS, 0, GaussianFlow([0.4, -1.0], SIGMA, flow_map=False)),  # other teacher weights (mu)
    ]:
        with pytest.raises(AssertionError, match="solved again"):
            path_cache.prepare(tmp_path, options, "exact", flow, data, seed, cpu)


def test_bad_settings_are_refused_by_name(tmp_path):
    with pytest.raises(ObjectiveError, match=r"teacher_path.*div_source = 'self'"):
        describe({"name": "shortcut_f2d2", "div_source": "self", "teacher_path": OPTIONS})
    with pytest.raises(ObjectiveError, match="teacher_path"):
        describe({"name": "shortcut_distill_f2d2", "teacher_path": {**OPTIONS, "grid": 3}})
    with pytest.raises(ObjectiveError, match="rows"):
        describe({"name": "shortcut_distill_f2d2", "teacher_path": {"points": 4, "grid": 2}})
    with pytest.raises(ObjectiveError, match=r"'shortcut_distill' has no option\(s\) \['teacher_path'\]"):
        describe({"name": "shortcut_distill", "teacher_path": OPTIONS})
    images = make_dataset({"name": "patches", "size": 8})
    n = len(images.train_pixels())
    with pytest.raises(ValueError, match=rf"teacher_path.points = {n + 1} is more than the {n} training"):
        path_cache.prepare(
            tmp_path, {**OPTIONS, "points": n + 1}, "exact", GaussianFlow([0.0] * 192, 0.5), images, 0, "cpu"
        )


def _run(teacher: str, steps: int) -> dict:
    return resolve_run(
        {
            "seed": 3,
            "data": {"name": "checkerboard"},
            "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2, "div_head": True},
            "objective": {
                "name": "shortcut_distill_f2d2",
                "teacher": teacher,
                "semigroup_log2": 2,
                "teacher_path": {"points": 64, "grid": 4, "rows": 16, "weight": 1.0, "tol": 1e-3},
            },
            "train": {"steps": steps, "batch_size": 32, "lr": 1e-3, "warmup": 2, "log_every": 5, "ckpt_every": 5},
        }
    )


def test_a_run_trains_on_its_path_and_reads_it_back_when_resumed(tmp_path, monkeypatch):
    teacher = train(
        resolve_run(
            {
                "seed": 0,
                "data": {"name": "checkerboard"},
                "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2},
                "train": {"steps": 10, "batch_size": 32, "warmup": 2},
            }
        ),
        tmp_path / "teacher",
        progress=False,
    )
    run = _run(str(teacher), 10)
    first = load_checkpoint(train(run, tmp_path / "f2d2", progress=False))
    rows = [json.loads(line) for line in (tmp_path / "f2d2" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["path"] > 0 for r in rows)
    saved = torch.load(tmp_path / "f2d2" / path_cache.FILE, weights_only=True)
    assert saved["x"].shape == (5, 64, 2) and saved["key"]["points"] == 64

    # the run again from step 0 in the same folder (its checkpoints gone): the kept path, the same weights
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "metrics.jsonl"):
        (tmp_path / "f2d2" / name).unlink(missing_ok=True)
    monkeypatch.setattr(tp, "solve", lambda *a, **k: pytest.fail("the run solved its path again"))
    again = load_checkpoint(train(run, tmp_path / "f2d2", progress=False))
    assert all(torch.equal(first["model"][k], v) for k, v in again["model"].items())
