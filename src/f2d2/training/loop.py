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

The parts: :class:`TrainState` (what a checkpoint holds), :func:`save_state` and :func:`resume` (the
checkpoint written and read back), :class:`MetricsLog` (``metrics.jsonl``) and ``_train``, the step loop.
Data batches x1 are (B / world, *data_shape); the objectives draw noise x0 at t = 0 and data at t = 1.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from f2d2.config import experiment
from f2d2.config.resolve import ConfigError
from f2d2.data import SEED_STRIDE, Dataset2D, ImageDataset, make_dataset
from f2d2.io.atomic import FULL, DiskFull, atomic_write_text, remove_stale_temporaries
from f2d2.io.checkpoint import load_resumable, previous_path, save_checkpoint, warm_start
from f2d2.io.teacher import load_teacher
from f2d2.nets import FlowMapNet, build_model
from f2d2.objectives import build_objective, describe, option_problems_of
from f2d2.objectives import resolve as resolve_objective
from f2d2.training import path_cache, speed
from f2d2.training.distributed import Group, init_from_env, shutdown
from f2d2.training.early_stop import EarlyStop
from f2d2.training.ema import multi_avg_fn
from f2d2.training.failures import check_terms
from f2d2.training.lock import workdir_lock
from f2d2.training.preemption import StopSignals

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def prepare_run(run_cfg: dict) -> tuple[dict, Dataset2D | ImageDataset]:
    """The run's dataset, and a plain copy of the config with what the data and objective determine
    filled in (the model's input shape, whether it is a flow map, every objective option's value)."""
    run = json.loads(json.dumps(run_cfg))  # a plain, YAML/JSON-safe copy
    run["objective"] = resolve_objective(run["objective"])
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


def train(run_cfg: dict, workdir: str | Path, *, progress: bool = True, restart_on_change: bool = False) -> Path:
    """Train one run to ``train.steps`` steps; returns the path of the final checkpoint. ``restart_on_change``:
    see :func:`resume`."""
    workdir = Path(workdir)
    run, data = prepare_run(run_cfg)
    tr = run["train"]
    group = init_from_env(torch.device(tr["device"]).type)
    try:
        with workdir_lock(workdir) if group.is_main else contextlib.nullcontext():  # one training per folder
            return _train(run, data, workdir, group, progress and group.is_main, restart_on_change)
    finally:
        shutdown(group)


@dataclass
class TrainState:
    """What a checkpoint saves and a resume restores: the network, its EMA, the optimizer, the learning-rate
    schedule, this rank's generator (data, noise x0, times t and probes) and the number of steps taken."""

    model: FlowMapNet
    ema: AveragedModel
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator
    step: int = 0

    @classmethod
    def start(cls, model: FlowMapNet, run: dict, device: torch.device, group: Group) -> TrainState:
        """Step 0 of ``model`` (built under the run's seed): warm-started from ``train.init_from`` if set,
        the same on every rank; rank r's generator seeded with ``seed + r * SEED_STRIDE``."""
        tr = run["train"]
        if tr["init_from"] is not None:
            warm_start(model, tr["init_from"])
        group.broadcast_(model.state_dict().values())
        opt = torch.optim.RAdam(model.parameters(), lr=tr["lr"])
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, functools.partial(lr_factor, warmup=tr["warmup"], steps=tr["steps"], schedule=tr["lr_schedule"])
        )
        ema = AveragedModel(model, multi_avg_fn=multi_avg_fn(tr), use_buffers=True)
        gen = torch.Generator(device).manual_seed(run["seed"] + SEED_STRIDE * group.rank)
        return cls(model, ema, opt, sched, gen)

    def state_dict(self) -> dict:
        """The checkpoint entries ``step``, ``model``, ``ema``, ``optimizer``, ``scheduler`` (not the RNGs)."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
        }

    def rng_state(self) -> dict:
        """This rank's random state: its generator (``data``) and the global torch RNG (``torch``)."""
        return {"data": self.gen.get_state(), "torch": torch.get_rng_state()}

    def load(self, ckpt: dict, rng: dict) -> None:
        """Restore :meth:`state_dict`'s entries from ``ckpt`` and the random state from ``rng``
        (:meth:`rng_state` of this rank when the checkpoint was saved)."""
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.gen.set_state(rng["data"])
        torch.set_rng_state(rng["torch"])
        self.step = ckpt["step"]


def save_state(
    path: Path,
    state: TrainState,
    run: dict,
    group: Group,
    *,
    early: EarlyStop | None,
    stopped: dict,
    kept: dict | None = None,
) -> None:
    """Write the checkpoint (rank 0; every rank must call it, for the gather of the random states).

    Entries: ``config``, :meth:`TrainState.state_dict`'s, ``rng`` (rank 0's), ``rng_by_rank`` under several
    processes, ``early_stop`` (:meth:`EarlyStop.state`) with ``train.early_stop``, ``early_stopped`` once it
    stopped, ``kept_best`` (the check whose EMA weights the run ended with) when ``keep_best`` took them."""
    rngs = group.gather(state.rng_state())
    if not group.is_main:
        return
    payload = {"config": run, **state.state_dict(), "rng": rngs[0]}
    if group.world > 1:
        payload["rng_by_rank"] = rngs
    if early is not None:
        payload["early_stop"] = early.state()
    if stopped:
        payload["early_stopped"] = stopped
    if kept:
        payload["kept_best"] = kept
    save_checkpoint(path, payload, keep_previous=True)


def resume(path: Path, run: dict, state: TrainState, group: Group, *, restart_on_change: bool = False) -> dict | None:
    """Load the checkpoint at ``path`` into ``state`` and return it; None when there is none to resume.

    A checkpoint of a run that stopped early, or ended with its best check's weights, is returned without
    loading it (training is over). Raises
    when the checkpoint was written by another config (see :func:`_resume_key`) or number of processes;
    with ``restart_on_change`` such a checkpoint (and its metrics) is moved into ``stale/`` beside it
    instead, and training starts afresh (the pipeline retrains a run whose settings changed)."""
    ckpt = load_resumable(path)
    if ckpt is None:
        return None
    changed = _resume_key(ckpt["config"]) != _resume_key(run)
    if changed and restart_on_change:
        if group.is_main:
            stale = path.parent / "stale"
            shutil.rmtree(stale, ignore_errors=True)
            stale.mkdir()
            for name in (path.name, previous_path(path).name, METRICS):
                if (path.parent / name).exists():
                    (path.parent / name).rename(stale / name)
            print(f"{path} was written by a different config: moved into {stale}/; training afresh", flush=True)
        group.barrier()
        return None
    if changed:
        raise RuntimeError(
            f"{path} was written by a different config (only train.log_every, ckpt_every and, with a constant "
            "lr_schedule, steps may change on resume); use a fresh workdir or delete the checkpoint"
        )
    if "early_stopped" in ckpt or "kept_best" in ckpt:
        if group.is_main:
            how = (
                f"stopped early at step {ckpt['step']} ({ckpt['early_stopped']})"
                if "early_stopped" in ckpt
                else f"ended at step {ckpt['step']} with the weights of its best check ({ckpt['kept_best']})"
            )
            print(f"{path} {how}; not training further", flush=True)
        return ckpt
    state.load(ckpt, _rank_rng(ckpt, group, path))
    if group.is_main:
        print(f"resuming from {path} at step {state.step}", flush=True)
    return ckpt


class MetricsLog:
    """``metrics.jsonl``, one JSON row per logged step, written by rank 0 alone (``enabled``).

    Entered, it drops the rows past ``step`` (a resumed run starts from its checkpoint's step) and
    opens the file for appending; :meth:`write` adds a row and flushes it. With ``tensorboard`` it also
    writes each row's values as scalars (tag = key, at the row's step) to event files in
    ``tensorboard/`` beside the file (train.tensorboard; events past ``step`` are purged)."""

    def __init__(self, path: Path, step: int, *, enabled: bool, tensorboard: bool = False) -> None:
        self.path, self.step, self.enabled, self.tensorboard = path, step, enabled, tensorboard
        self._file = self._writer = None

    def __enter__(self) -> MetricsLog:
        if self.enabled:
            _truncate_log(self.path, self.step)
            self._file = open(self.path, "a")
            if self.tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # the optional dependency: f2d2[tensorboard]

                self._writer = SummaryWriter(self.path.parent / "tensorboard", purge_step=self.step + 1)
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in (self._file, self._writer):
            if handle is not None:
                try:
                    handle.close()
                except OSError as e:  # a full disk again, flushing what write() could not: report the first error
                    if exc[0] is None:
                        raise DiskFull(e.errno, f"cannot write {self.path}: {e.strerror}") from None
        self._file = self._writer = None

    def write(self, row: dict) -> None:
        try:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        except OSError as e:
            if e.errno not in FULL:
                raise
            raise DiskFull(
                e.errno,
                f"cannot append to {self.path}: the disk is full ({e.strerror}); the checkpoint is kept, and a "
                "half-written last line is dropped when the run resumes: free space and run the command again",
            ) from None
        if self._writer is not None:
            for key, value in row.items():
                if key != "step":
                    self._writer.add_scalar(key, value, row["step"])
            self._writer.flush()


def _train(run: dict, data: Dataset2D, workdir: Path, group: Group, progress: bool, restart_on_change: bool) -> Path:
    tr = run["train"]
    device = _device(tr, group)
    workdir.mkdir(parents=True, exist_ok=True)

    # The run's state at step 0, everything drawn from the run's seed in this order.
    torch.manual_seed(run["seed"])
    model = build_model(run["model"]).to(device)
    teacher = run["objective"].get("teacher")  # loaded whenever one is named (cifar10's shortcut_f2d2 names one
    teacher = None if teacher is None else load_teacher(teacher, device)  # for its early stop only)
    start = load_teacher(tr["init_from"], device) if describe(run["objective"]).needs_start else None
    objective = build_objective(run["objective"], teacher=teacher, start=start)
    state = TrainState.start(model, run, device, group)
    notes = speed.setup(tr, data, state.model, objective, device)  # train.compile, data_on_device, precision
    if group.is_main and notes:
        print("\n".join(notes), flush=True)

    # Resume from the workdir's checkpoint, if any.
    ckpt_path = workdir / CHECKPOINT
    if group.is_main:
        for name in (CHECKPOINT, METRICS, "config.yaml", path_cache.FILE):
            remove_stale_temporaries(workdir / name)
    group.barrier()
    ckpt = resume(ckpt_path, run, state, group, restart_on_change=restart_on_change)
    if ckpt is not None and ("early_stopped" in ckpt or "kept_best" in ckpt):
        if group.is_main and not (workdir / "config.yaml").exists():  # e.g. Snakemake removed a failed job's outputs
            atomic_write_text(workdir / "config.yaml", yaml.safe_dump(ckpt["config"], sort_keys=False))
        return ckpt_path
    if objective.needs_path:
        objective.path = _teacher_path(run, objective, teacher, data, workdir, group, device).to(device)
    early = _early_stop(run, data, device, group, ckpt)
    if group.is_main:
        atomic_write_text(workdir / "config.yaml", yaml.safe_dump(run, sort_keys=False))
    stopped: dict = {}  # the early stop, once it happened
    kept: dict = {}  # with keep_best and no stop: the best check, whose EMA weights the run ends with

    state.model.train()
    t_start = time.time()
    local_batch = tr["batch_size"] // group.world
    with (
        MetricsLog(workdir / METRICS, state.step, enabled=group.is_main, tensorboard=tr["tensorboard"]) as log,
        StopSignals() as stop,
        tqdm(
            total=tr["steps"],
            initial=state.step,
            disable=not progress,
            desc=f"train {run['objective']['name']}",
            mininterval=2,
        ) as bar,
    ):
        while state.step < tr["steps"]:
            # One optimizer step on this rank's share of the batch; the ranks average gradients and terms.
            x1 = data.sample(local_batch, state.gen).to(device)
            with speed.autocast(tr["precision"], device):
                terms = objective(state.model, x1, state.gen)
            state.opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            values, stopping = group.sync_step(state.model.parameters(), terms, bool(stop.pending))
            check_terms(values, state.step + 1, state.model.div_scale, objective.DIVERGENCE_TERMS)
            if tr["grad_clip"] is not None:
                torch.nn.utils.clip_grad_norm_(state.model.parameters(), tr["grad_clip"])
            state.opt.step()
            state.sched.step()
            state.ema.update_parameters(state.model)
            state.step += 1
            step = state.step
            bar.update(1)

            # Validation of the EMA model (early stop).
            val = None
            if early is not None and early.checks_at(step):
                val = early.row(early.evaluate(state.ema.module))
                early.consider(step, val, state.ema)
                if early.reached(val):
                    stopped.update(step=step, **val)
            if step == tr["steps"] and not stopped and early is not None and early.best is not None:
                state.ema.load_state_dict(early.best["ema"])
                kept.update(step=early.best["step"], **early.best["row"])

            # Log row.
            if log.enabled and (step % tr["log_every"] == 0 or step == tr["steps"] or val is not None):
                row = {"step": step, "lr": state.sched.get_last_lr()[0], "time": round(time.time() - t_start, 3)}
                row.update(values)
                row.update(val or {})
                log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.4g}")

            # Checkpoint: every ckpt_every steps, at the end, on a stop signal and on the early stop.
            if step % tr["ckpt_every"] == 0 or step == tr["steps"] or stopping or stopped:
                save_state(ckpt_path, state, run, group, early=early, stopped=stopped, kept=kept)

            # Stop: hand a stop signal on (submitit requeues the job) or end at the early stop.
            if stopping:
                if group.is_main:
                    print(f"stop signal: saved {ckpt_path} at step {step}", flush=True)
                stop.deliver()
            if stopped:
                if group.is_main:
                    print(
                        f"early stop at step {step}: validation BPD {stopped['val_bpd']:.4f} is within "
                        f"{early.tol} of the target {early.target:.4f}{early.per_point_note(stopped)}; "
                        f"saved {ckpt_path}",
                        flush=True,
                    )
                break
            if kept and group.is_main:
                print(
                    f"no check within {early.tol} of the target {early.target:.4f}: kept the EMA weights of the best "
                    f"check, step {kept['step']} (validation BPD {kept['val_bpd']:.4f}); saved {ckpt_path}",
                    flush=True,
                )
    group.barrier()
    return ckpt_path


def _device(tr: dict, group: Group) -> torch.device:
    """This rank's device (``cuda:local_rank`` under several CUDA processes); checks the batch splits evenly."""
    if tr["batch_size"] % group.world:
        raise ConfigError(
            f"train.batch_size = {tr['batch_size']} is not divisible by the number of "
            f"processes ({group.world}); use a multiple of {group.world}"
        )
    device = torch.device(tr["device"])
    if device.type == "cuda" and group.world > 1:
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    return device


def _early_stop(run: dict, data, device: torch.device, group: Group, ckpt: dict | None) -> EarlyStop | None:
    """The early stop of ``train.early_stop`` (None without it); its target (best check, per-point reference) come
    from the checkpoint on a resume, else from the config or, when that is null, the teacher's reference BPD
    (computed now, as is a per-point reference the checkpoint lacks)."""
    if run["train"]["early_stop"] is None:
        return None
    early = EarlyStop(run, data, device=device, group=group)
    if ckpt is not None:
        early.target = ckpt["early_stop"]["target_bpd"]
        early.best = ckpt["early_stop"].get("best")
        early.reference_nll = ckpt["early_stop"].get("reference_nll")
    if early.target is None or (early.per_point and early.reference_nll is None):
        early.target = early.reference(run["objective"]["teacher"], describe(run["objective"]).div_method)
    return early


def _teacher_path(run: dict, objective, teacher: FlowMapNet, data, workdir: Path, group: Group, device):
    """The path of objective.teacher_path, read back from the workdir or solved by every rank alike (rank 0
    writes it): no rank waits for another, so a long solve meets no collective's timeout."""
    t0 = time.time()
    path = path_cache.prepare(
        workdir,
        run["objective"]["teacher_path"],
        objective.div_method,
        teacher,
        data,
        run["seed"],
        device,
        write=group.is_main,
    )
    if group.is_main:
        print(f"teacher path: {path.x.shape[1]} points, {path.grid} segments ({time.time() - t0:.0f} s)", flush=True)
    return path


def _rank_rng(ckpt: dict, group: Group, path: Path) -> dict:
    """This rank's generator states from a checkpoint; the number of processes must not change."""
    by_rank = ckpt.get("rng_by_rank", [ckpt["rng"]])
    if len(by_rank) != group.world:
        raise RuntimeError(
            f"{path} was written by {len(by_rank)} training process(es); resume it with "
            f"{len(by_rank)}, not {group.world} (or start a fresh workdir)"
        )
    return by_rank[group.rank]


def _resume_key(run: dict) -> dict:
    """``experiment.resume_key`` with the objective's options resolved (a checkpoint's config may predate a
    default being written out); an objective section that no longer resolves is compared as it is."""
    objective = run["objective"]
    if not option_problems_of(objective):
        objective = resolve_objective(objective)
    return experiment.resume_key({**run, "objective": objective})


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run starts from), and a last
    line that a killed run left unfinished (no newline)."""
    if not path.exists():
        return
    complete = path.read_text().split("\n")[:-1]
    lines = [ln for ln in complete if ln.strip() and json.loads(ln)["step"] <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in lines))
