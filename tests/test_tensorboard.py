"""train.tensorboard: metrics.jsonl's rows as TensorBoard scalars, or a one-line refusal without the package."""

from __future__ import annotations

import json

import pytest

from f2d2.config.resolve import ConfigError, resolve_run
from f2d2.preflight import checks
from f2d2.training.loop import MetricsLog, train

REFUSAL = "train.tensorboard = true needs the tensorboard package: pip install 'f2d2[tensorboard]'"


def tiny_run(tensorboard: bool) -> dict:
    return resolve_run(
        {
            "seed": 1,
            "data": {"name": "checkerboard"},
            "model": {"arch": "mlp", "hidden": 16, "depth": 2, "time_freqs": 2},
            "train": {
                "steps": 12,
                "batch_size": 32,
                "warmup": 2,
                "log_every": 4,
                "ckpt_every": 6,
                "tensorboard": tensorboard,
            },
        }
    )


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the event files in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_is_off_by_default():
    assert resolve_run({})["train"]["tensorboard"] is False
    assert checks.tensorboard_problems(resolve_run({})) == []


def test_training_writes_every_logged_value_as_a_scalar(tmp_path):
    train(tiny_run(True), tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    found = scalars(tmp_path / "tensorboard")
    assert set(found) == set(rows[0]) - {"step"}  # lr, time and every loss term
    for tag, points in found.items():
        assert [s for s, _ in points] == [r["step"] for r in rows]
        assert [v for _, v in points] == pytest.approx([r[tag] for r in rows], rel=1e-6)


def test_a_resumed_log_purges_the_events_past_its_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path, 0, enabled=True, tensorboard=True) as log:
        for step in (1, 2, 3):
            log.write({"step": step, "loss": float(step)})
    with MetricsLog(path, 2, enabled=True, tensorboard=True) as log:  # resumed from a step-2 checkpoint
        log.write({"step": 3, "loss": 30.0})
    assert scalars(tmp_path / "tensorboard")["loss"] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_no_events_without_the_key(tmp_path):
    train(tiny_run(False), tmp_path, progress=False)
    assert (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_without_the_package_is_refused_in_one_line(monkeypatch):
    real = checks.importlib.util.find_spec

    def find_spec(name, package=None):
        return None if name == "tensorboard" else real(name, package)

    monkeypatch.setattr(checks.importlib.util, "find_spec", find_spec)
    assert checks.run_problems(tiny_run(True)) == [REFUSAL]
    with pytest.raises(ConfigError, match=r"pip install 'f2d2\[tensorboard\]'"):
        checks.check_run(tiny_run(True))
    assert checks.run_problems(tiny_run(False)) == []
