"""The training loop: RAdam, linear warm-up, EMA, seeded, resumable from its own checkpoint.

``train(run_cfg, workdir)`` writes into ``workdir``:
``config.yaml`` (the resolved run config), ``metrics.jsonl`` (one line per logged
step) and ``checkpoint.pt``. Started again on the same workdir it resumes from the
checkpoint and ends in the same state as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint, warm_start
from .data import Dataset2D, ImageDataset, make_dataset
from .fileio import atomic_write_text
from .nets import build_model
from .objectives import build_objective

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term is NaN or inf; the message names the step and every term."""


def prepare_run(run_cfg: dict) -> tuple[dict, Dataset2D | ImageDataset]:
    """The run's dataset, and a plain copy of the config with what the data and objective determine
    filled in (the model's input shape, whether it is a flow map)."""
    run = json.loads(json.dumps(run_cfg))  # a plain, YAML/JSON-safe copy
    data = make_dataset(run["data"])
    for key, value in data.model_defaults().items():
        run["model"].setdefault(key, value)
    run["model"]["flow_map"] = run["objective"]["name"] != "flow_matching"
    return run, data


def train(run_cfg: dict, workdir: str | Path, *, progress: bool = True) -> Path:
    """Train one run to ``train.steps`` steps; returns the path of the final checkpoint."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run, data = prepare_run(run_cfg)
    tr = run["train"]
    device = torch.device(tr["device"])

    torch.manual_seed(run["seed"])
    model = build_model(run["model"]).to(device)
    objective = build_objective(run["objective"], device=tr["device"])
    if tr["init_from"] is not None:
        warm_start(model, tr["init_from"])
    opt = torch.optim.RAdam(model.parameters(), lr=tr["lr"])
    warmup = tr["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup) if warmup else 1.0)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tr["ema_decay"]), use_buffers=True)
    gen = torch.Generator(device).manual_seed(run["seed"])
    step = 0

    ckpt_path = workdir / CHECKPOINT
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if _resume_key(ckpt["config"]) != _resume_key(run):
            raise RuntimeError(
                f"{ckpt_path} was written by a different config (only train.steps, log_every and ckpt_every "
                "may change on resume); use a fresh workdir or delete the checkpoint"
            )
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["rng"]["data"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        step = ckpt["step"]
    atomic_write_text(workdir / "config.yaml", yaml.safe_dump(run, sort_keys=False))
    _truncate_log(workdir / METRICS, step)

    def save() -> None:
        save_checkpoint(
            ckpt_path,
            {
                "config": run,
                "step": step,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": {"data": gen.get_state(), "torch": torch.get_rng_state()},
            },
        )

    model.train()
    t_start = time.time()
    with open(workdir / METRICS, "a") as log, tqdm(
        total=tr["steps"], initial=step, disable=not progress, desc=f"train {run['objective']['name']}", mininterval=2
    ) as bar:
        while step < tr["steps"]:
            x1 = data.sample(tr["batch_size"], gen).to(device)
            terms = objective(model, x1, gen)
            _check_finite(terms, step + 1)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if tr["grad_clip"] is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
            opt.step()
            sched.step()
            ema.update_parameters(model)
            step += 1
            bar.update(1)
            if step % tr["log_every"] == 0 or step == tr["steps"]:
                row = {"step": step, "lr": sched.get_last_lr()[0], "time": round(time.time() - t_start, 3)}
                row.update({k: float(v.detach()) for k, v in terms.items()})
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{row['loss']:.4g}")
            if step % tr["ckpt_every"] == 0 or step == tr["steps"]:
                save()
    return ckpt_path


def _resume_key(run: dict) -> dict:
    """The part of a run config that must match for a resume (the length and logging may change)."""
    tr = {k: v for k, v in run["train"].items() if k not in ("steps", "log_every", "ckpt_every")}
    return {**run, "train": tr}


def _check_finite(terms: dict[str, torch.Tensor], step: int) -> None:
    values = {k: float(v.detach()) for k, v in terms.items()}
    if not all(math.isfinite(v) for v in values.values()):
        listing = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {listing}. Lower train.lr, set train.grad_clip, "
            "or check the data for NaN/inf values."
        )


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in lines))
