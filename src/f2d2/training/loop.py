"""The training loop: RAdam, linear warm-up, EMA, seeded, resumable from its own checkpoint.

``train(run_cfg, workdir)`` writes into ``workdir``:
``config.yaml`` (the resolved run config), ``metrics.jsonl`` (one line per logged
step), ``checkpoint.pt`` and the one before it, ``checkpoint.prev.pt``. Started again
on the same workdir it resumes from the checkpoint (from the previous one, with a
warning, if the latest cannot be read) and ends in the same state as an
uninterrupted run. A stop signal (SLURM
preemption or time limit, ``scancel``) saves a checkpoint at the end of the current step
(:mod:`f2d2.training.preemption`). Under several processes (:mod:`f2d2.training.distributed`) each rank trains on
``batch_size / world`` points and rank 0 alone writes files. With ``train.early_stop``
(:mod:`f2d2.training.early_stop`) it stops once the validation BPD reaches its target; the checkpoint then
records ``early_stopped`` and a restart returns at once.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import torch
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from f2d2.io.checkpoint import load_model, load_resumable, save_checkpoint, warm_start
from f2d2.config.resolve import ConfigError
from f2d2.data import Dataset2D, ImageDataset, make_dataset
from f2d2.training.distributed import Group, init_from_env, shutdown
from f2d2.training.early_stop import EarlyStop
from f2d2.training.failures import check_terms
from f2d2.io.atomic import atomic_write_text, remove_stale_temporaries
from f2d2.nets import build_model
from f2d2.objectives import build_objective, describe
from f2d2.training.preemption import StopSignals

CHECKPOINT = "checkpoint.pt"
RANK_SEED_STRIDE = 1_000_003  # rank r's generator starts from seed + r * stride
METRICS = "metrics.jsonl"


def prepare_run(run_cfg: dict) -> tuple[dict, Dataset2D | ImageDataset]:
    """The run's dataset, and a plain copy of the config with what the data and objective determine
    filled in (the model's input shape, whether it is a flow map)."""
    run = json.loads(json.dumps(run_cfg))  # a plain, YAML/JSON-safe copy
    data = make_dataset(run["data"])
    for key, value in data.model_defaults().items():
        run["model"].setdefault(key, value)
    run["model"]["flow_map"] = describe(run["objective"]).flow_map
    return run, data


def lr_factor(i: int, *, warmup: int, steps: int, schedule: str) -> float:
    """Multiplier of train.lr at optimizer step i (0-based): linear warm-up over ``warmup`` steps, then
    1 ("constant") or a half cosine reaching 0 at step ``steps`` ("cosine")."""
    if warmup and i < warmup:
        return (i + 1) / warmup
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (i - warmup) / max(1, steps - warmup))))
    return 1.0


def train(run_cfg: dict, workdir: str | Path, *, progress: bool = True) -> Path:
    """Train one run to ``train.steps`` steps; returns the path of the final checkpoint."""
    workdir = Path(workdir)
    run, data = prepare_run(run_cfg)
    tr = run["train"]
    group = init_from_env(torch.device(tr["device"]).type)
    try:
        return _train(run, data, workdir, group, progress and group.is_main)
    finally:
        shutdown(group)


def _train(run: dict, data: Dataset2D, workdir: Path, group: Group, progress: bool) -> Path:
    tr = run["train"]
    if tr["batch_size"] % group.world:
        raise ConfigError(f"train.batch_size = {tr['batch_size']} is not divisible by the number of "
                          f"processes ({group.world}); use a multiple of {group.world}")
    device = torch.device(tr["device"])
    if device.type == "cuda" and group.world > 1:
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    workdir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(run["seed"])
    model = build_model(run["model"]).to(device)
    teacher = run["objective"].get("teacher")  # a checkpoint path (resolved), loaded whenever one is named
    teacher = None if teacher is None else load_model(teacher, ema=True, device=device).requires_grad_(False)
    objective = build_objective(run["objective"], teacher=teacher)
    if tr["init_from"] is not None:
        warm_start(model, tr["init_from"])
    group.broadcast_(model.state_dict().values())
    opt = torch.optim.RAdam(model.parameters(), lr=tr["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, functools.partial(lr_factor, warmup=tr["warmup"], steps=tr["steps"], schedule=tr["lr_schedule"]))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tr["ema_decay"]), use_buffers=True)
    gen = torch.Generator(device).manual_seed(run["seed"] + RANK_SEED_STRIDE * group.rank)
    step = 0

    ckpt_path = workdir / CHECKPOINT
    if group.is_main:
        for name in (CHECKPOINT, METRICS, "config.yaml"):
            remove_stale_temporaries(workdir / name)
    group.barrier()
    ckpt = load_resumable(ckpt_path)
    if ckpt is not None:
        if _resume_key(ckpt["config"]) != _resume_key(run):
            raise RuntimeError(
                f"{ckpt_path} was written by a different config (only train.steps, log_every and ckpt_every "
                "may change on resume); use a fresh workdir or delete the checkpoint"
            )
        if "early_stopped" in ckpt:
            if group.is_main:
                print(f"{ckpt_path} stopped early at step {ckpt['step']} ({ckpt['early_stopped']}); not training "
                      "further", flush=True)
            return ckpt_path
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        rng = _rank_rng(ckpt, group, ckpt_path)
        gen.set_state(rng["data"])
        torch.set_rng_state(rng["torch"])
        step = ckpt["step"]
        if group.is_main:
            print(f"resuming from {ckpt_path} at step {step}", flush=True)
    early = None
    if tr["early_stop"] is not None:
        early = EarlyStop(run, data, device=device, group=group)
        if ckpt is not None:
            early.target = ckpt["early_stop"]["target_bpd"]
        elif early.target is None:
            early.target = early.reference(run["objective"]["teacher"], run["objective"].get("div_method", "exact"))
    if group.is_main:
        atomic_write_text(workdir / "config.yaml", yaml.safe_dump(run, sort_keys=False))
        _truncate_log(workdir / METRICS, step)
    stopped: dict = {}  # the early stop, once it happened

    def save() -> None:
        rngs = group.gather({"data": gen.get_state(), "torch": torch.get_rng_state()})
        if not group.is_main:
            return
        payload = {
            "config": run,
            "step": step,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": rngs[0],
        }
        if group.world > 1:
            payload["rng_by_rank"] = rngs
        if early is not None:
            payload["early_stop"] = {"target_bpd": early.target}
        if stopped:
            payload["early_stopped"] = stopped
        save_checkpoint(ckpt_path, payload, keep_previous=True)

    model.train()
    t_start = time.time()
    local_batch = tr["batch_size"] // group.world
    log = open(workdir / METRICS, "a") if group.is_main else None
    try:
        with StopSignals() as stop, tqdm(total=tr["steps"], initial=step, disable=not progress,
                                         desc=f"train {run['objective']['name']}", mininterval=2) as bar:
            while step < tr["steps"]:
                x1 = data.sample(local_batch, gen).to(device)
                terms = objective(model, x1, gen)
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                values, stopping = group.sync_step(model.parameters(), terms, bool(stop.pending))
                check_terms(values, step + 1, model.div_scale)
                if tr["grad_clip"] is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
                opt.step()
                sched.step()
                ema.update_parameters(model)
                step += 1
                bar.update(1)
                val = None
                if early is not None and step % early.every == 0:
                    val = {"val_bpd": early.evaluate(ema.module), "target_bpd": early.target}
                    if early.reached(val["val_bpd"]):
                        stopped.update(step=step, **val)
                if log is not None and (step % tr["log_every"] == 0 or step == tr["steps"] or val is not None):
                    row = {"step": step, "lr": sched.get_last_lr()[0], "time": round(time.time() - t_start, 3)}
                    row.update(values)
                    row.update(val or {})
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{row['loss']:.4g}")
                if step % tr["ckpt_every"] == 0 or step == tr["steps"] or stopping or stopped:
                    save()
                if stopping:
                    if group.is_main:
                        print(f"stop signal: saved {ckpt_path} at step {step}", flush=True)
                    stop.deliver()
                if stopped:
                    if group.is_main:
                        print(f"early stop at step {step}: validation BPD {stopped['val_bpd']:.4f} is within "
                              f"{early.tol} of the target {early.target:.4f}; saved {ckpt_path}", flush=True)
                    break
    finally:
        if log is not None:
            log.close()
    group.barrier()
    return ckpt_path


def _rank_rng(ckpt: dict, group: Group, path: Path) -> dict:
    """This rank's generator states from a checkpoint; the number of processes must not change."""
    by_rank = ckpt.get("rng_by_rank", [ckpt["rng"]])
    if len(by_rank) != group.world:
        raise RuntimeError(f"{path} was written by {len(by_rank)} training process(es); resume it with "
                           f"{len(by_rank)}, not {group.world} (or start a fresh workdir)")
    return by_rank[group.rank]


def _resume_key(run: dict) -> dict:
    """The part of a run config that must match for a resume (the length and logging may change)."""
    tr = {k: v for k, v in run["train"].items() if k not in ("steps", "log_every", "ckpt_every")}
    return {**run, "train": tr}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run starts from), and a last
    line that a killed run left unfinished (no newline)."""
    if not path.exists():
        return
    complete = path.read_text().split("\n")[:-1]
    lines = [ln for ln in complete if ln.strip() and json.loads(ln)["step"] <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in lines))
