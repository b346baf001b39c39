"""Sample quality of image flow maps: FID of each sampler against held-out images, with bootstrap intervals, and
what maximum-likelihood self-guidance does to it (``f2d2 quality``).

A sampler is a run, a step count K (or the adaptive dopri5 solve) and optional guidance (Adam steps and learning
rate on the noise, Algorithm 2). Every sampler draws its noise from the same seed, so a guided sampler and its
unguided twin start from the same noise and their FIDs are compared pairwise: the same bootstrap resamples of
both give the interval of the difference, far narrower than either FID's own. Each cell also records what
guidance optimises (the mean one-step predicted log-likelihood of the noise before and after, nats), how far it
moves the samples, and the teacher's reference BPD of the samples (dopri5, Hutchinson): whether guided samples
are more likely under the teacher. Time runs from t = 0 (noise) to t = 1 (data).

Features are cached per cell (``cells/<name>.npz``: features and bootstrap replicates; ``<name>.json``: the
cell), so a rerun computes only the cells whose settings changed or whose files are missing.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from f2d2.core.guidance import predicted_log_likelihood, self_guided_noise
from f2d2.core.likelihood import reference_log_likelihood
from f2d2.core.sampling import sample_in_batches
from f2d2.eval import bpd, frechet
from f2d2.eval import fid as fidlib
from f2d2.eval.inception import sha1
from f2d2.eval.nll import points_nll
from f2d2.io.atomic import atomic_path, atomic_write_text


@dataclass(frozen=True)
class Sampler:
    """One sample cell: ``run`` at ``steps`` K uniform steps (None: dopri5) from ``n`` noise draws, guided by
    ``adam`` Adam steps of learning rate ``lr`` (0 steps: unguided); ``group`` prefixes its name (the sweep's
    cells, when they draw another number of samples than the main cells)."""

    run: str
    steps: int | None
    n: int
    adam: int = 0
    lr: float | None = None
    group: str = ""

    @property
    def guided(self) -> bool:
        return self.adam > 0

    @property
    def solver(self) -> str:
        return "dopri5" if self.steps is None else f"{self.steps}-step"

    @property
    def name(self) -> str:
        """[<group>/]<run>/<dopri5|K<k>>[_g<adam>x<lr>], e.g. meanflow_f2d2/K2_g1x0.05."""
        base = "dopri5" if self.steps is None else f"K{self.steps}"
        group = f"{self.group}/" if self.group else ""
        return f"{group}{self.run}/{base}" + (f"_g{self.adam}x{self.lr:g}" if self.guided else "")

    @property
    def twin(self) -> Sampler:
        """The same sampler without guidance (the pair a guided cell is compared with)."""
        return Sampler(self.run, self.steps, self.n, group=self.group)


def plan(
    teacher: str,
    baselines: list[str],
    f2d2: list[str],
    *,
    n: int,
    steps: list[int],
    euler: int,
    lr_one_step: float,
    lr_multi_step: float,
    adam: int,
    sweep_run: str | None = None,
    sweep_steps: int = 2,
    sweep_lrs: tuple[float, ...] = (),
    sweep_adam: tuple[int, ...] = (),
    sweep_n: int | None = None,
) -> list[Sampler]:
    """The samplers of the study: the teacher's dopri5 and ``euler``-step Euler samples and its Euler samples at
    every K of ``steps`` (the F2D2 runs' NFE without guidance), each baseline at K = 1,
    each F2D2 run at every K of ``steps`` unguided and guided (``adam`` steps, ``lr_one_step`` at K = 1,
    ``lr_multi_step`` above), and the guidance sweep: ``sweep_run`` at ``sweep_steps`` over ``sweep_lrs`` x
    ``sweep_adam`` with ``sweep_n`` samples (and its unguided twin; the main cells' own when sweep_n is n)."""
    cells = [Sampler(teacher, None, n), Sampler(teacher, euler, n), *(Sampler(teacher, k, n) for k in steps)]
    cells += [Sampler(run, 1, n) for run in baselines]
    for run in f2d2:
        for k in steps:
            cells += [Sampler(run, k, n), Sampler(run, k, n, adam, lr_one_step if k == 1 else lr_multi_step)]
    if sweep_run is not None:
        m = sweep_n or n
        group = "" if m == n else "sweep"
        cells.append(Sampler(sweep_run, sweep_steps, m, group=group))
        cells += [Sampler(sweep_run, sweep_steps, m, a, lr, group) for a in sweep_adam for lr in sweep_lrs]
    return list(dict.fromkeys(cells))


def held_out_split(pixels: torch.Tensor, n_reference: int, n_floor: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random subsets of held-out images (N, C, H, W) uint8: the reference (n_reference) and the
    floor set (n_floor, scored like a sampler: the FID of real images, the noise floor at that N)."""
    if n_reference + n_floor > len(pixels):
        raise ValueError(
            f"n_reference {n_reference} + n {n_floor} held-out images requested; the test split has {len(pixels)}"
        )
    perm = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))
    ref, floor = perm[:n_reference], perm[n_reference : n_reference + n_floor]
    return pixels[ref].numpy(), pixels[floor].numpy()


class Study:
    """The features, reference and cached cells of one study under ``out``; ``extractor``/``weights_dir`` choose
    the FID network (:mod:`f2d2.eval.fid`), ``reps`` the bootstrap replicates (same resamples for every cell of
    the same n: ``seed``)."""

    def __init__(self, out, *, extractor: str, weights_dir, device: str, reps: int, seed: int, batch_size: int):
        self.out = Path(out)
        self.extractor, self.weights_dir, self.device = extractor, weights_dir, device
        self.reps, self.seed, self.batch_size = reps, seed, batch_size
        self.ref: frechet.FrechetReference | None = None

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """Features (N, F) of uint8 images (N, C, H, W)."""
        return fidlib.features(pixels, self.extractor, weights_dir=self.weights_dir, device=self.device)

    def cached(self, name: str, spec: dict) -> tuple[dict, np.ndarray, np.ndarray] | None:
        """(cell, features, replicates) of a finished cell whose spec equals ``spec``, else None."""
        path = self.out / "cells" / f"{name}.json"
        if not path.is_file() or not path.with_suffix(".npz").is_file():
            return None
        cell = json.loads(path.read_text())
        if cell.get("spec") != spec:
            return None
        with np.load(path.with_suffix(".npz")) as f:
            feats, reps = f["features"], f["replicates"]
        if name != "reference" and len(reps) != self.reps:
            return None
        return cell, feats, reps

    def store(self, name: str, cell: dict, feats: np.ndarray, reps: np.ndarray) -> None:
        path = self.out / "cells" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path.with_suffix(".npz")) as tmp:
            np.savez(tmp, features=feats, replicates=reps)
        atomic_write_text(path, json.dumps(cell, indent=1) + "\n")

    def reference(self, pixels: np.ndarray, spec: dict) -> None:
        """The reference statistics of held-out ``pixels`` (features cached as cells/reference.npz)."""
        hit = self.cached("reference", spec)
        if hit is None:
            t0 = time.perf_counter()
            feats = self.features(pixels)
            cell = {"spec": spec, "n": len(pixels), "features_seconds": round(time.perf_counter() - t0, 2)}
            self.store("reference", cell, feats, np.zeros(0))
        else:
            feats = hit[1]
        self.ref = frechet.FrechetReference.of_features(feats)

    def score(self, name: str, spec: dict, pixels_fn) -> tuple[dict, np.ndarray]:
        """A cell's FID with its bootstrap interval: cached, or ``pixels_fn()`` -> (uint8 images, extra fields)
        computed, featurised and stored. Returns (cell, replicates)."""
        hit = self.cached(name, spec)
        if hit is not None:
            return hit[0], hit[2]
        pixels, extra = pixels_fn()
        t0 = time.perf_counter()
        feats = self.features(pixels)
        seconds = time.perf_counter() - t0
        samples = frechet.FrechetSamples(feats, self.ref)
        point = samples.fid()
        reps = frechet.bootstrap(samples, frechet.bootstrap_indices(len(feats), self.reps, self.seed))
        cell = {"spec": spec, "name": name, **extra, "fid": point, **frechet.interval(point, reps)}
        cell["features_seconds"] = round(seconds, 2)
        self.store(name, cell, feats, reps)
        return cell, reps


def teacher_bpd(teacher, pixels: np.ndarray, *, seed: int, tol: float, batch_size: int) -> float:
    """Mean BPD of uint8 images (n, C, H, W) under the teacher's dopri5 solve (atol = rtol = ``tol``, one
    Hutchinson probe per image, dequantization and probes seeded by ``seed``)."""
    device = next(teacher.parameters()).device
    probes = torch.Generator(device).manual_seed(seed + 1)
    nll, _ = points_nll(
        torch.from_numpy(pixels),
        lambda z: reference_log_likelihood(teacher, z, atol=tol, rtol=tol, div="hutchinson", generator=probes),
        tuple(teacher.data_shape),
        batch_size=batch_size,
        device=device,
        dequant=torch.Generator().manual_seed(seed),
    )
    return float(bpd.bits_per_dim(nll, math.prod(teacher.data_shape)).mean())


def sample_pixels(model, sampler: Sampler, *, seed: int, batch_size: int, device: str) -> tuple[np.ndarray, dict]:
    """Samples of ``sampler`` as uint8 pixels (n, C, H, W) and what the cell records besides FID: seconds of the
    sampling and, for guided cells, the mean predicted one-step log-likelihood (nats) of the noise before and after
    guidance and the RMS move of the noise and of the samples (model space, against the unguided samples of the
    same noise)."""
    gen = torch.Generator(device).manual_seed(seed)
    x0 = torch.randn((sampler.n, *model.data_shape), generator=gen, device=device)
    extra: dict = {}
    t0 = time.perf_counter()
    if sampler.guided:
        eps = torch.cat([self_guided_noise(model, c, lr=sampler.lr, steps=sampler.adam) for c in x0.split(batch_size)])
    else:
        eps = x0
    x1 = sample_in_batches(model, eps, sampler.steps, batch_size=batch_size)[0]
    extra["sample_seconds"] = round(time.perf_counter() - t0, 3)
    if model.has_div_head:
        with torch.no_grad():
            ll = lambda z: float(  # noqa: E731
                torch.cat([predicted_log_likelihood(model, c) for c in z.split(batch_size)]).double().mean()
            )
            extra["one_step_loglik_before"] = ll(x0)
            extra["one_step_loglik_after"] = ll(eps) if sampler.guided else extra["one_step_loglik_before"]
    if sampler.guided:
        plain = sample_in_batches(model, x0, sampler.steps, batch_size=batch_size)[0]
        extra["moved_rms"] = float((x1 - plain).pow(2).mean().sqrt())
        extra["noise_moved_rms"] = float((eps - x0).pow(2).mean().sqrt())
    return fidlib.to_pixels(x1.cpu().numpy()), extra


def paired(guided: np.ndarray, plain: np.ndarray, point: float) -> dict:
    """The FID difference guided - unguided (``point``) with the 95% interval of its paired bootstrap
    replicates (same resamples of the same noise indices)."""
    spread = frechet.interval(point, guided - plain)
    return {"delta": point, "delta_sd": spread["sd"], "delta_lo": spread["lo"], "delta_hi": spread["hi"]}


def measure(
    samplers: list[Sampler],
    models: dict[str, torch.nn.Module],
    checkpoints: dict[str, Path],
    teacher: str,
    held_out: tuple[np.ndarray, np.ndarray],
    study: Study,
    *,
    seed: int,
    batch_size: int,
    bpd_tol: float | None,
    log=print,
) -> list[dict]:
    """Every sampler's cell (and the floor: held-out images scored like samples) as table rows; ``models`` and
    ``checkpoints`` map each run to its loaded network and the file it came from (recorded in the cells). With
    ``bpd_tol`` each cell also records the teacher's BPD of its images (``teacher_bpd``)."""

    def with_bpd(pixels: np.ndarray, extra: dict) -> tuple[np.ndarray, dict]:
        if bpd_tol is not None:
            extra["teacher_bpd"] = teacher_bpd(models[teacher], pixels, seed=seed, tol=bpd_tol, batch_size=batch_size)
        return pixels, extra

    ref_px, floor_px = held_out
    network = {"extractor": study.extractor, "sha1": fidlib.extractor_info(study.extractor, study.weights_dir)["sha1"]}
    study.reference(ref_px, {"n": len(ref_px), "seed": study.seed, **network})
    # checkpoints by content (each file hashed once): a run retrained in place is scored again, not served from
    # the cache
    digests = {run: sha1(Path(path)) for run, path in checkpoints.items()}
    common = {"seed": seed, "bpd_tol": bpd_tol, "teacher": str(checkpoints[teacher]), **network}
    common["teacher_sha1"] = digests[teacher]
    floor, _ = study.score(
        "data/held_out", {"n": len(floor_px), **common}, lambda: with_bpd(floor_px, {"n": len(floor_px)})
    )
    rows = [{**floor, "run": "data", "solver": "held-out images", "steps": None, "nfe": 0}]
    replicates: dict[Sampler, np.ndarray] = {}
    points: dict[Sampler, float] = {}
    for s in samplers:
        spec = {**asdict(s), **common, "checkpoint": str(checkpoints[s.run]), "sha1": digests[s.run]}
        t0 = time.perf_counter()
        cell, reps = study.score(
            s.name,
            spec,
            lambda s=s: with_bpd(
                *sample_pixels(models[s.run], s, seed=seed, batch_size=batch_size, device=study.device)
            ),
        )
        replicates[s], points[s] = reps, cell["fid"]
        row = {**cell, "run": s.run, "solver": s.solver, "steps": s.steps, "n": s.n, "adam": s.adam, "lr": s.lr}
        row["group"] = s.group
        row["nfe"] = None if s.steps is None else s.steps + (2 * s.adam if s.guided else 0)
        if s.guided and s.twin in replicates:
            row.update(paired(reps, replicates[s.twin], cell["fid"] - points[s.twin]))
        rows.append(row)
        log(f"[quality] {s.name}: FID {cell['fid']:.2f} +/- {1.96 * cell['sd']:.2f} ({time.perf_counter() - t0:.0f} s)")
    return rows


TABLE_COLUMNS = (
    "name", "group", "run", "solver", "steps", "adam", "lr", "nfe", "n", "fid", "lo", "hi", "sd", "delta", "delta_sd",
    "delta_lo", "delta_hi", "one_step_loglik_before", "one_step_loglik_after", "moved_rms", "noise_moved_rms",
    "teacher_bpd", "sample_seconds", "features_seconds",
)  # fmt: skip


def verdicts(rows: list[dict], *, teacher: str, euler: int, targets: list[str], sweep_run: str | None) -> list[dict]:
    """The issue's targets, each met or not, from the rows: guided below unguided beyond the paired interval
    (``targets`` at K = 1, 2), and 2-step guided ``sweep_run`` at or below the many-step teacher's FID."""
    by = {r["name"]: r for r in rows}
    out = []
    for row in rows:
        main = not row.get("group")
        if main and row["run"] in targets and row.get("adam") and row["steps"] in (1, 2) and "delta_hi" in row:
            out.append(
                {
                    "target": f"{row['name']}: guided FID below unguided beyond the interval",
                    "value": f"delta {row['delta']:+.2f} [{row['delta_lo']:+.2f}, {row['delta_hi']:+.2f}]",
                    "met": bool(row["delta_hi"] < 0),
                }
            )
    many = by.get(f"{teacher}/K{euler}")
    if sweep_run is not None and many is not None:
        # at the teacher's N: FID is biased upward at smaller N, so the sweep's smaller cells do not compare
        guided = [
            r for r in rows if r["run"] == sweep_run and r["steps"] == 2 and r.get("adam") and r["n"] == many["n"]
        ]
        best = min(guided, key=lambda r: r["fid"], default=None)
        if best is not None:
            out.append(
                {
                    "target": f"2-step guided {sweep_run} at or below the {euler}-step teacher's FID",
                    "value": f"{best['name']} {best['fid']:.2f} vs {many['fid']:.2f} (teacher K{euler})",
                    "met": bool(best["fid"] <= many["fid"]),
                }
            )
    return out


def write(record: dict, out) -> None:
    """The study's record as out/quality.json, its rows as out/quality.csv and the sweep figure out/quality.png."""
    import pandas as pd

    out = Path(out)
    atomic_write_text(out / "quality.json", json.dumps(record, indent=1) + "\n")
    table = pd.DataFrame(record["rows"]).reindex(columns=list(TABLE_COLUMNS))
    atomic_write_text(out / "quality.csv", table.to_csv(index=False))
    figure(record, out / "quality.png")


def figure(record: dict, path) -> None:
    """Left: FID of the main cells with 95% intervals (the floor of real held-out images dashed). Right (the
    paper's Figure 4): the sweep run's FID against the guidance learning rate, one line per number of Adam steps,
    with the mean one-step predicted log-likelihood of the noise after guidance on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, sweep = record["rows"], record.get("sweep_run")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    main = [r for r in rows if r["run"] != "data" and not r.get("group")]
    ax.errorbar(
        range(len(main)),
        [r["fid"] for r in main],
        yerr=[1.96 * r["sd"] for r in main],
        fmt="o",
        color="tab:blue",
    )
    floor = next(r for r in rows if r["run"] == "data")
    ax.axhline(floor["fid"], ls="--", color="0.5", label=f"held-out images (N = {floor['n']}): {floor['fid']:.2f}")
    ax.set_xticks(range(len(main)), [r["name"] for r in main], rotation=75, fontsize=7)
    ax.set_ylabel(f"FID ({record['network'].get('source', record['extractor'])})")
    ax.set_title(f"FID against {record['n_reference']} held-out images, N = {record['n']}, 95% bootstrap intervals")
    ax.legend()
    if sweep:
        pts = [
            r for r in rows if r["run"] == sweep and r["n"] == record["sweep_n"] and r["steps"] == record["sweep_steps"]
        ]
        plain = next((r for r in pts if not r["adam"]), None)
        cx = bx.twinx()
        for a, colour in zip(sorted({r["adam"] for r in pts if r["adam"]}), plt.get_cmap("tab10").colors):
            line = sorted((r for r in pts if r["adam"] == a), key=lambda r: r["lr"])
            bx.errorbar(
                [r["lr"] for r in line], [r["fid"] for r in line], yerr=[1.96 * r["sd"] for r in line],
                fmt="o-", color=colour, label=f"{a} Adam step{'s' if a > 1 else ''}",
            )  # fmt: skip
            cx.plot([r["lr"] for r in line], [r["one_step_loglik_after"] for r in line], "x:", color=colour)
        if plain is not None:
            bx.axhline(plain["fid"], ls="--", color="0.3", label=f"unguided: {plain['fid']:.2f}")
            cx.axhline(plain["one_step_loglik_before"], ls=":", color="0.6")
        bx.set_xscale("log")
        bx.set_xlabel("guidance learning rate")
        bx.set_ylabel("FID (o, solid)")
        cx.set_ylabel("mean one-step log-likelihood of the noise after guidance, nats (x, dotted)")
        bx.set_title(f"{sweep}, K = {record['sweep_steps']}, N = {record['sweep_n']}")
        bx.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
