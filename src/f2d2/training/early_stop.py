"""Early stopping of F2D2 finetuning at a calibrated BPD (the paper's Appendix C).

With ``train.early_stop`` set, training measures every ``every`` steps (from step ``start`` on) the BPD of
the EMA model's ``steps``-step F2D2 likelihood (divergence head) on a held-out validation split, and stops as soon as
it lies within ``tol`` bits/dim of the target (``steps`` a list of K: once every K's BPD does; the one farthest
from the target is the logged ``val_bpd``, each K's ``val_bpd_K<k>``): ``target_bpd``, or (null) the teacher's reference
(dopri5) BPD on the same split, computed once at the start and kept in the checkpoint. With ``keep_best``
a run whose checks never come within ``tol`` ends with the EMA weights of its best check (the smallest
distance of its worst K to the target) instead of its last ones; the best so far is kept in the checkpoint, so
a resumed run remembers it. With ``per_point`` (a null target, two or more K) each check also logs each K's
mean per-point |NLL - reference NLL| on the split (``val_err_K<k>``, in nats), and the run stops only where
the largest K's is at most the smallest K's as well: more steps no worse per point, not only on average (the
per-point reference is kept in the checkpoint beside the target). ``start`` skips the
first steps, where a new head's BPD falls from far above the target to far below it and passes the target
once on its way (on 8x8 patches ~0.13 bits/dim per step near step 95): a stop there is no calibration.

The split is data training never sees: ``n_val`` test images (``ImageDataset.test_subset(n_val, seed)``,
dequantized with a generator seeded by ``seed``, as ``f2d2 nll --dequant-seed`` does), ``n_val`` held-out
rows of a user's point file (``PointCloud.test_points(n_val, seed)``; all of them when there are fewer),
or ``n_val`` points of an analytic set from a generator seeded with ``seed + VAL_STREAM``, apart from
the training streams.
An evaluation draws nothing from the training generator and restores the global RNGs, so a run with
early stopping is bitwise the run without it up to the stop. Every rank evaluates and takes rank 0's
value (a broadcast), so all ranks stop at the same step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from f2d2.config.resolve import ConfigError
from f2d2.core.likelihood import LikelihoodResult, log_likelihood, reference_log_likelihood
from f2d2.data import Dataset2D, ImageDataset
from f2d2.eval.bpd import bits_per_dim
from f2d2.eval.nll import points_nll
from f2d2.io.teacher import load_teacher
from f2d2.nets import FlowMapNet
from f2d2.objectives import describe
from f2d2.training.distributed import Group

VAL_STREAM = 2**32  # 2D validation points: seed + VAL_STREAM (training's streams: seed + rank * data.SEED_STRIDE)


def early_stop_problems(run: dict) -> list[str]:
    """What a resolved run with ``train.early_stop`` lacks (a divergence head; a teacher for a null target; a
    start within train.steps; a per-point reference and two K for ``per_point``)."""
    es = run["train"].get("early_stop")
    if es is None:
        return []
    problems = []
    if run["model"].get("div_head") is not True:
        problems.append(
            f"train.early_stop measures the F2D2 likelihood of the divergence head, but "
            f"model.div_head = {run['model'].get('div_head')!r}; set model.div_head: true or "
            "train.early_stop: null"
        )
    if es["start"] > run["train"]["steps"]:
        problems.append(
            f"train.early_stop.start = {es['start']} is past train.steps = {run['train']['steps']}: no check would "
            "run; set a start <= train.steps or train.early_stop: null"
        )
    if es.get("target_bpd") is None and run["objective"].get("teacher") is None:
        problems.append(
            "train.early_stop.target_bpd = None means the teacher's reference BPD, but "
            "objective.teacher = None; set objective.teacher (a stage name or checkpoint path) "
            "or a number as train.early_stop.target_bpd"
        )
    if es["per_point"]:
        steps = es["steps"] if isinstance(es["steps"], list) else [es["steps"]]
        if es["target_bpd"] is not None or len(steps) < 2:
            problems.append(
                f"train.early_stop.per_point compares the per-point errors of the largest and smallest K against "
                f"the teacher's per-point reference, but target_bpd = {es['target_bpd']!r} and steps = "
                f"{es['steps']!r}; set target_bpd: null and two or more K, or per_point: false"
            )
    return problems


def first_check(cfg: dict) -> int:
    """The step of a ``train.early_stop`` mapping's first check: the first multiple of ``every`` from ``start``
    on (steps count from 1)."""
    return cfg["every"] * max(1, -(-cfg["start"] // cfg["every"]))


def validation_split(data: Dataset2D | ImageDataset, n: int, seed: int) -> torch.Tensor:
    """The held-out validation data on the CPU: uint8 test images (N, C, H, W) or float32 points (N, dim)."""
    if isinstance(data, ImageDataset):
        return data.test_subset(n, seed)
    if data.has_test_split:  # a user's point file: its held-out rows, never training rows
        return data.test_points(n, seed)
    return data.sample(n, torch.Generator().manual_seed(seed + VAL_STREAM))


class EarlyStop:
    """The validation split of one run and its BPD checks; ``target`` is set by the caller or ``reference``."""

    def __init__(self, run: dict, data: Dataset2D | ImageDataset, *, device: torch.device, group: Group):
        problems = early_stop_problems(run)
        if problems:
            raise ConfigError("; ".join(problems))
        self.cfg = run["train"]["early_stop"]
        self.every, self.tol, self.target = self.cfg["every"], self.cfg["tol"], self.cfg["target_bpd"]
        self.keep_best, self.per_point = self.cfg["keep_best"], self.cfg["per_point"]
        self.reference_nll: torch.Tensor | None = None  # with per_point: (n_val,) float64 nats on the split
        self.best: dict | None = None  # with keep_best: {"step", "row" (its metrics row), "ema" (its weights)}
        steps = self.cfg["steps"]
        self.ks = [steps] if isinstance(steps, int) else list(steps)
        self.backward = "two-way" if describe(run["objective"]).two_way else "forward-only"
        self.batch_size = run["train"]["batch_size"] // group.world
        self.device, self.group = device, group
        self.x = validation_split(data, self.cfg["n_val"], self.cfg["seed"])
        self.dim = math.prod(self.x.shape[1:])  # dimensions per point (BPD)

    def reference(self, teacher: str | dict, div: str) -> float:
        """The reference (dopri5) BPD of the teacher's velocity (a checkpoint's EMA weights, or an outside
        model's spec) on the split; with ``per_point`` its per-point NLL is kept as ``reference_nll``."""
        with self._own_rng():
            model = load_teacher(teacher, device=self.device)
            gen = torch.Generator(self.device).manual_seed(self.cfg["seed"])  # Hutchinson probes
            nll = self._nll(model, lambda x: reference_log_likelihood(model, x, div=div, generator=gen))
        if self.per_point:
            self.reference_nll = nll
        return self._bpd(nll)

    def evaluate(self, model: FlowMapNet) -> dict[int, torch.Tensor]:
        """{K: the per-point NLL (n_val,) in nats of ``model``'s (the EMA network's) K-step F2D2 likelihood on the
        split} for each K of steps."""
        was_training = model.training
        model.eval()  # no dropout
        try:
            with self._own_rng():
                return {
                    k: self._nll(model, lambda x, k=k: log_likelihood(model, x, k, div="head", backward=self.backward))
                    for k in self.ks
                }
        finally:
            model.train(was_training)

    def row(self, nlls: dict[int, torch.Tensor]) -> dict[str, float]:
        """The metrics row of one check (``nlls`` from :meth:`evaluate`): ``val_bpd`` (the K farthest from the
        target), ``target_bpd``, for several K each ``val_bpd_K<k>`` and, with ``per_point``, each ``val_err_K<k>``."""
        bpds = {k: self._bpd(nll) for k, nll in nlls.items()}
        worst = max(bpds.values(), key=lambda bpd: abs(bpd - self.target))
        per_k = {f"val_bpd_K{k}": bpd for k, bpd in bpds.items()} if len(bpds) > 1 else {}
        errors = {}
        if self.per_point:
            errors = {f"val_err_K{k}": float((nll - self.reference_nll).abs().mean()) for k, nll in nlls.items()}
        return {"val_bpd": worst, "target_bpd": self.target, **per_k, **errors}

    def consider(self, step: int, row: dict[str, float], ema: torch.nn.Module) -> None:
        """With ``keep_best``: remember the weights of ``ema`` (the EMA network's container, as the checkpoint
        saves it) when this check's worst K is closer to the target than every earlier check's."""
        if not self.keep_best:
            return
        if self.best is None or abs(row["val_bpd"] - self.target) < abs(self.best["row"]["val_bpd"] - self.target):
            weights = {k: v.detach().to("cpu", copy=True) for k, v in ema.state_dict().items()}
            self.best = {"step": step, "row": dict(row), "ema": weights}

    def state(self) -> dict:
        """The checkpoint's ``early_stop`` entry: the target, with ``keep_best`` the best check so far and with
        ``per_point`` the per-point reference."""
        return {
            "target_bpd": self.target,
            **({"best": self.best} if self.keep_best else {}),
            **({"reference_nll": self.reference_nll} if self.per_point else {}),
        }

    def checks_at(self, step: int) -> bool:
        """Whether training measures the validation BPD after ``step`` steps: a multiple of every, >= start."""
        return step % self.every == 0 and step >= first_check(self.cfg)

    def reached(self, row: dict[str, float]) -> bool:
        """Whether a check's row stops the run: its worst K within tol and, with ``per_point``, the largest K's
        per-point error at most the smallest K's."""
        if abs(row["val_bpd"] - self.target) > self.tol:
            return False
        return not self.per_point or row[f"val_err_K{max(self.ks)}"] <= row[f"val_err_K{min(self.ks)}"]

    def per_point_note(self, row: dict[str, float]) -> str:
        """With ``per_point``: the largest and smallest K's per-point errors of a check's row, for a message."""
        if not self.per_point:
            return ""
        hi, lo = max(self.ks), min(self.ks)
        return (
            f" and K = {hi}'s per-point error {row[f'val_err_K{hi}']:.2f} nats is at most K = {lo}'s "
            f"{row[f'val_err_K{lo}']:.2f}"
        )

    def _own_rng(self):
        """Restore the global CPU (and this CUDA device's) RNG state afterwards."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def _nll(self, model: FlowMapNet, likelihood: Callable[[torch.Tensor], LikelihoodResult]) -> torch.Tensor:
        """Per-point NLL (n_val,) float64 nats on the split, rank 0's on every rank (one decision)."""
        nll, _ = points_nll(
            self.x,
            likelihood,
            model.data_shape,
            batch_size=self.batch_size,
            device=self.device,
            dequant=torch.Generator().manual_seed(self.cfg["seed"]),
        )
        nll = nll.to(self.device)
        self.group.broadcast_([nll])
        return nll.cpu()

    def _bpd(self, nll: torch.Tensor) -> float:
        return float(bits_per_dim(nll, self.dim).mean())
