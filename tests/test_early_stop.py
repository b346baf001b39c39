"""train.early_stop: F2D2 finetuning stops at the first check whose validation BPD is within tol of the
target; without a stop it changes nothing; an early-stopped workdir is not trained further."""

from __future__ import annotations

import copy
import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from f2d2.cli import main
from f2d2.config.resolve import ConfigError, resolve_run
from f2d2.core.likelihood import log_likelihood, reference_log_likelihood
from f2d2.data import make_dataset
from f2d2.eval.bpd import bits_per_dim
from f2d2.io.checkpoint import load_checkpoint, load_model
from f2d2.training import early_stop as early_stop_mod
from f2d2.training.early_stop import validation_split
from f2d2.training.loop import train

STEPS, EVERY = 40, 5

EXPERIMENT = {
    "seed": 3,
    "data": {"name": "checkerboard"},
    "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2, "div_head": True, "div_scale": 1.0},
    "objective": {"name": "shortcut_f2d2", "div_source": "self", "lam": 1.0},
    "train": {
        "steps": STEPS,
        "batch_size": 64,
        "lr": 1e-3,
        "warmup": 5,
        "ema_decay": 0.9,
        "log_every": 10,
        "ckpt_every": 20,
    },
    "stages": {"f2d2": {}},
}


def experiment(early_stop: dict | None, **train_keys) -> dict:
    cfg = copy.deepcopy(EXPERIMENT)
    cfg["train"].update(train_keys)
    if early_stop is not None:
        cfg["train"]["early_stop"] = {"every": EVERY, "n_val": 128, "steps": 1, "seed": 11, **early_stop}
    return cfg


def f2d2_run(early_stop: dict | None, **train_keys) -> dict:
    return resolve_run(experiment(early_stop, **train_keys), "f2d2")


def rows(workdir) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


UNREACHABLE = {"target_bpd": 1000.0, "tol": 1e-3}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A run with early stopping that never triggers: (workdir, checks as {step: val_bpd})."""
    work = tmp_path_factory.mktemp("full")
    train(f2d2_run(UNREACHABLE), work, progress=False)
    return work, {r["step"]: r["val_bpd"] for r in rows(work) if "val_bpd" in r}


def test_unreachable_target_trains_to_the_end_with_a_check_every_few_steps(full):
    work, checks = full
    ckpt = load_checkpoint(work / "checkpoint.pt")
    assert ckpt["step"] == STEPS and "early_stopped" not in ckpt
    assert sorted(checks) == list(range(EVERY, STEPS + 1, EVERY))
    assert len(set(checks.values())) == len(checks)  # the BPD moves as the head trains
    assert all(r.get("target_bpd") == 1000.0 for r in rows(work) if "val_bpd" in r)
    assert [r["step"] for r in rows(work)] == sorted(checks)  # a check writes a row off the log steps too


def test_enabled_but_not_triggered_is_bitwise_the_run_without_it(full, tmp_path):
    work, _ = full
    plain = load_checkpoint(train(f2d2_run(None), tmp_path / "plain", progress=False))
    ckpt = load_checkpoint(work / "checkpoint.pt")
    for part in ("model", "ema"):
        assert same_state(plain[part], ckpt[part]), part
    assert same_state(plain["rng"], ckpt["rng"])
    assert rows(tmp_path / "plain") == [
        {k: v for k, v in r.items() if "bpd" not in k} for r in rows(work) if r["step"] % 10 == 0
    ]

    # Interrupted at step 20 and resumed: the same run again (the target comes back from the checkpoint).
    train(f2d2_run(UNREACHABLE, steps=20), tmp_path / "cut", progress=False)
    resumed = load_checkpoint(train(f2d2_run(UNREACHABLE), tmp_path / "cut", progress=False))
    assert resumed["early_stop"] == {"target_bpd": 1000.0}
    for part in ("model", "ema"):
        assert same_state(resumed[part], ckpt[part]), part
    assert rows(tmp_path / "cut") == rows(work)


@pytest.fixture(scope="module")
def full_many_k(tmp_path_factory):
    """The run of ``full`` checking K = 1 and 2 (never triggered): (workdir, {step: {k: val_bpd_K<k>}})."""
    work = tmp_path_factory.mktemp("full_many_k")
    train(f2d2_run({**UNREACHABLE, "steps": [1, 2]}), work, progress=False)
    return work, {r["step"]: {k: r[f"val_bpd_K{k}"] for k in (1, 2)} for r in rows(work) if "val_bpd" in r}


def test_several_k_log_each_k_and_the_worst_and_k1_is_the_single_k_check(full, full_many_k):
    _, checks = full
    work, by_k = full_many_k
    assert sorted(by_k) == sorted(checks)
    for r in (r for r in rows(work) if "val_bpd" in r):
        bpds = by_k[r["step"]]
        assert bpds[1] == checks[r["step"]]  # the same validation split, dequantization and model as K = 1 alone
        assert r["val_bpd"] == max(bpds.values(), key=lambda b: abs(b - 1000.0))  # the K farthest from the target
    assert any(b[1] != b[2] for b in by_k.values())


def test_several_k_stop_only_once_every_k_is_within_tol(full_many_k, tmp_path):
    """The target is K = 1's BPD at the first check, the tol half its gap to K = 2's there: K = 1 alone would stop
    at the first check; with K = 1 and 2 the run goes on to the first check where both are within tol."""
    _, by_k = full_many_k
    steps = sorted(by_k)
    target = by_k[steps[0]][1]
    tol = abs(by_k[steps[0]][2] - target) / 2
    assert tol > 0
    both = [s for s in steps if all(abs(b - target) <= tol for b in by_k[s].values())]
    work = tmp_path / "many"
    ckpt = load_checkpoint(train(f2d2_run({"target_bpd": target, "tol": tol, "steps": [1, 2]}), work, progress=False))
    if both:
        assert ckpt["step"] == both[0] > steps[0] and ckpt["early_stopped"]["val_bpd_K2"] == by_k[both[0]][2]
    else:
        assert ckpt["step"] == STEPS and "early_stopped" not in ckpt
    single = load_checkpoint(train(f2d2_run({"target_bpd": target, "tol": tol}), tmp_path / "one", progress=False))
    assert single["step"] == steps[0]


def test_no_check_before_start_so_an_early_pass_of_the_target_does_not_stop_the_run(full, tmp_path):
    _, checks = full
    target = checks[EVERY]  # the first check hits the target exactly
    later = {s: abs(v - target) for s, v in checks.items() if s > 2 * EVERY}
    tol = 1.01 * sorted(later.values())[1]  # admits two checks after step 2 * EVERY (and the first check)
    start = 2 * EVERY + 1
    expected = min(s for s, e in later.items() if e <= tol)
    work = tmp_path / "late"
    ckpt = load_checkpoint(train(f2d2_run({"target_bpd": target, "tol": tol, "start": start}), work, progress=False))
    assert ckpt["step"] == expected > start
    assert ckpt["early_stopped"]["val_bpd"] == checks[expected]
    checked = [r["step"] for r in rows(work) if "val_bpd" in r]
    assert checked == list(range(3 * EVERY, expected + 1, EVERY))  # nothing measured before start


def test_stops_at_the_first_check_within_tol_and_a_restart_trains_no_further(full, tmp_path, capsys):
    _, checks = full
    target = checks[25]
    tol = 1.5 * min(abs(v - target) for s, v in checks.items() if s != 25)  # admits 25 and at least one more
    first = min(s for s, v in checks.items() if abs(v - target) <= tol)
    assert first <= 25
    cfg = experiment({"target_bpd": target, "tol": tol})
    work = tmp_path / "stop"
    ckpt = load_checkpoint(train(resolve_run(cfg, "f2d2"), work, progress=False))
    assert ckpt["step"] == first < STEPS
    assert ckpt["early_stopped"] == {"step": first, "val_bpd": checks[first], "target_bpd": target}
    logged = rows(work)
    assert logged[-1]["step"] == first and logged[-1]["val_bpd"] == checks[first]
    assert [r["val_bpd"] for r in logged if "val_bpd" in r] == [checks[s] for s in range(EVERY, first + 1, EVERY)]

    # A restart, even asking for more steps, returns at once; the CLI's summary reports the stop.
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    train(resolve_run(experiment({"target_bpd": target, "tol": tol}, steps=80), "f2d2"), work, progress=False)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(cfg))
    summary = tmp_path / "train.json"
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--stage",
                "f2d2",
                "--workdir",
                str(work),
                "--no-progress",
                "--summary",
                str(summary),
            ]
        )
        == 0
    )
    assert "stopped early at step" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before
    assert json.loads(summary.read_text())["early_stopped"] == ckpt["early_stopped"]

    # Snakemake removes a failed job's outputs: a restart puts back the config.yaml of the run that stopped.
    written = (work / "config.yaml").read_text()
    (work / "config.yaml").unlink()
    train(resolve_run(cfg, "f2d2"), work, progress=False)
    assert (work / "config.yaml").read_text() == written
    assert yaml.safe_load(written) == ckpt["config"]


def test_keep_best_ends_with_the_best_checks_ema_and_a_resume_remembers_it(full, tmp_path, capsys):
    """No check within tol: the run ends with the EMA weights of the check closest to the target (here step 20),
    the raw weights of its last step; cut at step 20 and resumed, it ends the same; a restart trains no further."""
    work, checks = full
    target, tol = checks[20] + 1e-6, 1e-9  # step 20 is the closest check, none is within tol
    assert all(abs(v - target) > 1e-5 for s, v in checks.items() if s != 20)
    best = experiment({"target_bpd": target, "tol": tol, "keep_best": True})
    kept = load_checkpoint(train(resolve_run(best, "f2d2"), tmp_path / "best", progress=False))
    assert kept["step"] == STEPS and "early_stopped" not in kept
    assert kept["kept_best"] == {"step": 20, "val_bpd": checks[20], "target_bpd": target}
    short = load_checkpoint(train(f2d2_run(UNREACHABLE, steps=20), tmp_path / "short", progress=False))
    last = load_checkpoint(work / "checkpoint.pt")
    assert same_state(kept["ema"], short["ema"]) and not same_state(kept["ema"], last["ema"])
    assert same_state(kept["model"], last["model"])
    assert "kept the EMA weights of the best check, step 20" in capsys.readouterr().out

    # The step-20 checkpoint holds the best check so far; resumed from it, the run ends the same.
    prev = load_checkpoint(tmp_path / "best" / "checkpoint.prev.pt")
    assert prev["step"] == 20 and prev["early_stop"]["best"]["step"] == 20
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "checkpoint.pt").write_bytes((tmp_path / "best" / "checkpoint.prev.pt").read_bytes())
    resumed = load_checkpoint(train(resolve_run(best, "f2d2"), tmp_path / "cut", progress=False))
    assert resumed["kept_best"] == kept["kept_best"] and same_state(resumed["ema"], kept["ema"])
    before = (tmp_path / "best" / "checkpoint.pt").read_bytes()
    train(resolve_run(best, "f2d2"), tmp_path / "best", progress=False)
    assert "with the weights of its best check" in capsys.readouterr().out
    assert (tmp_path / "best" / "checkpoint.pt").read_bytes() == before


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A flow-matching teacher on the checkerboard: its checkpoint path."""
    teacher_run = resolve_run(
        {
            **copy.deepcopy(EXPERIMENT),
            "model": {"arch": "mlp", "hidden": 32, "depth": 2, "time_freqs": 2},
            "objective": {"name": "flow_matching"},
        },
        "f2d2",
    )
    return train(teacher_run, tmp_path_factory.mktemp("teacher"), progress=False)


def distilled(teacher, early_stop: dict) -> dict:
    """The f2d2 stage as Shortcut-Distill-F2D2 from ``teacher``, resolved, with ``early_stop``."""
    cfg = experiment(early_stop)
    cfg["objective"] = {"name": "shortcut_distill_f2d2", "teacher": str(teacher), "div_source": "teacher", "lam": 1.0}
    return resolve_run(cfg, "f2d2")


def validation_reference_nll(teacher) -> torch.Tensor:
    """The teacher's reference NLL (128,) in nats on the checks' validation split (n_val 128, seed 11)."""
    x = validation_split(make_dataset({"name": "checkerboard"}), 128, 11)
    return -reference_log_likelihood(load_model(teacher), x).log_prob.double()


def test_null_target_is_the_teachers_reference_bpd(teacher, tmp_path):
    ckpt = load_checkpoint(train(distilled(teacher, {"target_bpd": None, "tol": 100.0}), tmp_path, progress=False))
    assert ckpt["step"] == EVERY  # any BPD is within tol = 100: the first check stops

    x = validation_split(make_dataset({"name": "checkerboard"}), 128, 11)
    want = float(bits_per_dim(validation_reference_nll(teacher), 2).mean())
    assert ckpt["early_stopped"]["target_bpd"] == pytest.approx(want, rel=1e-6)
    assert ckpt["early_stop"] == {"target_bpd": ckpt["early_stopped"]["target_bpd"]}
    # the split is not the first training batch of the same seed
    assert not torch.equal(x[:64], make_dataset({"name": "checkerboard"}).sample(64, torch.Generator().manual_seed(11)))


def test_per_point_stops_only_where_the_largest_k_is_no_worse_per_point(teacher, tmp_path, monkeypatch):
    """With per_point every check logs each K's mean |NLL - reference NLL| on the split (what the checkpoint's
    kept per-point reference and the check's weights give), and the run stops at the first check within tol whose
    largest K's error is at most the smallest K's: with tol 100 (every check within) not before that check. The
    first two checks' K = 2 is made 1000 nats worse per point, so at least those two do not stop the run."""
    evaluate, calls = early_stop_mod.EarlyStop.evaluate, []

    def worse_k2_twice(self, model):
        nlls = evaluate(self, model)
        calls.append(1)
        return {**nlls, 2: nlls[2] + 1000.0} if len(calls) <= 2 else nlls

    monkeypatch.setattr(early_stop_mod.EarlyStop, "evaluate", worse_k2_twice)
    early = {"target_bpd": None, "tol": 100.0, "steps": [1, 2], "per_point": True}
    work = tmp_path / "pp"
    ckpt = load_checkpoint(train(distilled(teacher, early), work, progress=False))
    checks = [r for r in rows(work) if "val_bpd" in r]
    assert len(checks) >= 3 and checks[0]["val_err_K2"] > 1000 > checks[0]["val_err_K1"]
    assert all(r["val_err_K2"] > r["val_err_K1"] for r in checks[:-1])
    monkeypatch.undo()
    ref = validation_reference_nll(teacher)
    assert torch.allclose(ckpt["early_stop"]["reference_nll"], ref, rtol=0, atol=1e-3)  # float32, other batches
    last = checks[-1]
    if last["val_err_K2"] <= last["val_err_K1"]:
        assert ckpt["step"] == last["step"] and ckpt["early_stopped"]["val_err_K2"] == last["val_err_K2"]
    else:
        assert ckpt["step"] == STEPS and "early_stopped" not in ckpt
    model = load_model(work / "checkpoint.pt")
    x = validation_split(make_dataset({"name": "checkerboard"}), 128, 11)
    for k in (1, 2):
        nll = -log_likelihood(model, x, k, div="head", backward="two-way").log_prob.double()
        assert (nll - ref).abs().mean().item() == pytest.approx(last[f"val_err_K{k}"], abs=1e-3)
    # the same run without per_point stops at its first check (tol 100), with the same BPD there
    plain = tmp_path / "plain"
    first = load_checkpoint(train(distilled(teacher, {**early, "per_point": False}), plain, progress=False))
    assert first["step"] == EVERY and "val_err_K1" not in rows(plain)[-1]
    assert rows(plain)[-1]["val_bpd_K1"] == checks[0]["val_bpd_K1"]


@pytest.mark.parametrize(
    "early_stop, words",
    [
        ({"target_bpd": 1.0, "steps": [1, 2]}, ["target_bpd = 1.0", "set target_bpd: null"]),
        ({"target_bpd": None, "steps": 1}, ["steps = 1", "two or more K"]),
    ],
)
def test_per_point_without_a_per_point_reference_or_two_k_is_refused_before_training(
    teacher, tmp_path, early_stop, words
):
    with pytest.raises(ConfigError) as err:
        train(distilled(teacher, {**early_stop, "per_point": True}), tmp_path, progress=False)
    for word in ["train.early_stop.per_point", *words]:
        assert word in str(err.value), (word, str(err.value))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_start_past_the_last_step_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=rf"train.early_stop.start = {STEPS + 1} is past train.steps = {STEPS}"):
        train(f2d2_run({"target_bpd": 1.0, "start": STEPS + 1}), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_null_target_without_a_teacher_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"train.early_stop.target_bpd = None .* objective.teacher = None"):
        train(f2d2_run({"target_bpd": None}), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "early_stop, words",
    [
        ({"every": 0}, ["train.early_stop.every = 0", "integer >= 1"]),
        ({"n_val": 2.5}, ["train.early_stop.n_val = 2.5", "integer >= 1"]),
        ({"steps": True}, ["train.early_stop.steps = True", "integer >= 1"]),
        ({"tol": 0}, ["train.early_stop.tol = 0", "> 0"]),
        ({"target_bpd": "teacher"}, ["train.early_stop.target_bpd = 'teacher'", "a number or null"]),
        ({"seed": -1}, ["train.early_stop.seed = -1", "integer >= 0"]),
        ({"start": -10}, ["train.early_stop.start = -10", "integer >= 0"]),
        ({"patience": 3}, ["train.early_stop.patience is an unknown key", "'tol'"]),
    ],
)
def test_bad_early_stop_values_name_key_and_value(early_stop, words):
    with pytest.raises(ConfigError) as err:
        f2d2_run(early_stop)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_early_stop_not_a_mapping_is_refused():
    cfg = copy.deepcopy(EXPERIMENT)
    cfg["train"]["early_stop"] = 500
    with pytest.raises(ConfigError, match=r"train.early_stop = 500; expected a mapping or null"):
        resolve_run(cfg, "f2d2")


def test_image_validation_bpd_is_what_f2d2_nll_reports(tmp_path):
    """On generated images the check's BPD equals ``f2d2 nll`` on ``f2d2 data``'s test subset (same seeds)."""
    cfg = {
        "seed": 0,
        "data": {"name": "shapes", "size": 8, "n_train": 64, "n_test": 40},
        "model": {
            "arch": "unet",
            "channels": 8,
            "channel_mult": [1],
            "attn_resolutions": [],
            "num_res_blocks": 1,
            "dropout": 0.0,
            "div_head": True,
            "div_scale": 1.0,
        },
        "objective": {"name": "shortcut_f2d2", "div_source": "self", "div_method": "hutchinson", "semigroup_log2": 2},
        "train": {
            "steps": 4,
            "batch_size": 8,
            "warmup": 1,
            "log_every": 2,
            "ckpt_every": 4,
            "early_stop": {"every": 2, "n_val": 24, "steps": 1, "target_bpd": 0.0, "tol": 1e-3, "seed": 5},
        },
        "stages": {"f2d2": {}},
    }
    config = tmp_path / "img.yaml"
    config.write_text(yaml.safe_dump(cfg))
    ckpt = train(resolve_run(cfg, "f2d2"), tmp_path / "run", progress=False)
    val = [r["val_bpd"] for r in rows(tmp_path / "run") if "val_bpd" in r]
    assert len(val) == 2 and load_checkpoint(ckpt)["step"] == 4
    assert main(["data", "--config", str(config), "--n", "24", "--seed", "5", "--out", str(tmp_path / "x.npy")]) == 0
    assert (
        main(
            [
                "nll",
                "--checkpoint",
                str(ckpt),
                "--points",
                str(tmp_path / "x.npy"),
                "--steps",
                "1",
                "--div",
                "head",
                "--dequant-seed",
                "5",
                "--out",
                str(tmp_path / "nll.csv"),
                "--summary",
                str(tmp_path / "nll.json"),
            ]
        )
        == 0
    )
    nll = json.loads((tmp_path / "nll.json").read_text())
    assert nll["dequantized"] is True
    assert nll["mean_bpd"] == pytest.approx(val[-1], rel=1e-6)


def _rank_worker(rank: int, run: dict, workdir: str, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    if rank == 1:  # this rank alone would measure a BPD far from the target
        real = early_stop_mod.points_nll
        early_stop_mod.points_nll = lambda *a, **k: (lambda nll, nfe: (nll + 1e6, nfe))(*real(*a, **k))
    train(run, workdir, progress=False)


def test_two_gloo_ranks_take_rank_0s_decision(tmp_path):
    """Rank 1 measures another BPD, yet both processes stop at rank 0's first check and return."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.spawn(
        _rank_worker, args=(f2d2_run({"target_bpd": 0.0, "tol": 100.0}), str(tmp_path), port), nprocs=2, join=False
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks did not finish together within 120 s")
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == EVERY and ckpt["early_stopped"]["step"] == EVERY
    assert len(ckpt["rng_by_rank"]) == 2
