"""Out-of-distribution detection with one-step likelihoods on real pixels: AUROC and wall seconds per model.

    python bench/ood.py --results /work/patchrun/results/patches --out results/ood/patches

In-distribution: ``--n`` held-out patches (a seeded subset of the test split of the runs' data config). Out:
``--n`` patches of ``--ood-photos`` (default ``f2d2.data.patches.OOD_PHOTOS``; ``CHECK_PHOTOS``: two photos of
another wheel that no setting was chosen on, an independent check; photos no patches run trains on: refused if the
runs' data names one), the same number from each, cut by the same ``Patches`` grid (size, downsample, test
region). Every patch is dequantized once (``--seed``) and scored by every model of ``--config``'s stages
(checkpoints under ``--results``; ``--runs``: only those named, and the reference), one after the other in one
process on one CPU thread, each after a warm-up on one patch:

- an F2D2 run (a divergence head): K = 1, the head's density change (``f2d2.core.likelihood.log_likelihood``, what
  ``f2d2.log_prob(model, z, 1)`` computes);
- a run without a head: K = 1 Euler step of the joint ODE with ``eval.baseline_div`` (probes from ``--seed``);
- the reference: the teacher's dopri5 solve with ``eval.reference`` (tolerances, divergence); and the same solve
  with the exact divergence on ``--exact-n`` patches of each set (seeded), to show the Hutchinson probe's noise;
- with ``--own-reference``, each F2D2 run's own flow: the same dopri5 solve of its velocity u(x, t, t), the density
  a head trained on its own divergence (``div_source: self``) learns, which need not be the teacher's.

Higher BPD = out of distribution. Per scorer: AUROC of the BPD, of the complexity-corrected S = BPD - L(x)
(``--compressor``, :mod:`f2d2.eval.ood`), per OOD photo, on the exact subset, and its per-patch distance to the
exact reference there, and how its error on the held-out patches follows their complexity (``tilt``:
``f2d2.eval.ood.complexity_tilt``; a tilt moves the ranking when the sets differ in complexity). Target: F2D2
K = 1 AUROC within 0.01 of the reference's and >= 100x faster (and, with ``--own-reference``, the gap to the run's
own flow's AUROC); beside it each photo's AUROC difference and BPD shift, since the pooled difference can be small
while the photos' cancel, and how much of that shift is the prior at the point reached at t = 0 (the rest is the
summed divergence); and the shift of the held-out patches of each training photo, the same kind of error on
photos the head was trained on. Writes ``--out``/ood.json (command, seeds, checkpoints, sources, rows), ood.csv
(rows) and scores.csv (per patch: its source and photo, each scorer's BPD and its prior part).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from f2d2.config import experiment
from f2d2.config.resolve import load_yaml
from f2d2.core.likelihood import log_likelihood, reference_log_likelihood, standard_normal_log_prob
from f2d2.data import make_dataset
from f2d2.data.patches import CHECK_PHOTOS, DEFAULT_PHOTOS, OOD_PHOTOS, PHOTOS, Patches
from f2d2.eval import bpd
from f2d2.eval.ood import COMPRESSORS, auroc, complexity_tilt, compressed_bits_per_dim
from f2d2.io.checkpoint import load_checkpoint, model_of

ROOT = Path(__file__).resolve().parent.parent
TARGET_GAP, TARGET_SPEEDUP = 0.01, 100.0
OWN_FLOW = "own flow dopri5 ({})"


def load_runs(cfg: dict, results: Path, only: list[str] | None = None) -> tuple[str, dict[str, tuple[Path, dict]]]:
    """The reference teacher and {stage: (checkpoint path, checkpoint)} of every stage of ``cfg`` in ``results``
    (of the stages ``only`` names and the teacher, where given)."""
    stages, teacher = list(cfg["stages"]), experiment.reference_stage(cfg)
    if unknown := sorted(set(only or []) - set(stages)):
        raise SystemExit(f"--runs {unknown}: not stages of the config; expected some of {stages}")
    paths = {run: results / "train" / run / "checkpoint.pt" for run in stages if not only or run in {*only, teacher}}
    if missing := [str(p) for p in paths.values() if not p.is_file()]:
        raise SystemExit(f"--results {results}: {missing} not found; train the config's stages first")
    return teacher, {run: (p, load_checkpoint(p)) for run, p in paths.items()}


def patch_sets(data_cfg: dict, n: int, seed: int, ood: list[str]) -> tuple[torch.Tensor, list[str], list[str]]:
    """uint8 (2n, 3, s, s): n held-out test patches of ``data_cfg``, then n OOD patches (the photos ``ood`` in turn,
    equal shares); the source of each ("test" or the OOD photo) and the photo it was cut from."""
    if data_cfg.get("name") != "patches":
        raise SystemExit(f"the runs' data is {data_cfg.get('name')!r}; bench/ood.py scores patches runs")
    if trained := sorted(set(ood) & set(data_cfg.get("images") or DEFAULT_PHOTOS)):
        raise SystemExit(f"the runs' data.images include {trained}, the OOD photos; expected none of {ood}")
    held_out = make_dataset(data_cfg)
    test = held_out.test_pixels()
    if not 1 <= n <= len(test):
        raise SystemExit(f"--n {n}: expected 1 .. {len(test)} (the test patches of the runs' data)")
    chosen = np.sort(np.random.default_rng([seed, 0]).choice(len(test), n, replace=False))
    boxes = held_out.patch_boxes("test")
    pixels, sources, photos = [test[chosen]], ["test"] * n, [boxes[i][0] for i in chosen]
    for i, photo in enumerate(ood):
        count = n // len(ood) + (i < n % len(ood))
        out = Patches(
            size=held_out.size,
            images=[photo],
            test_fraction=held_out.test_fraction,
            downsample=held_out.downsample,
            n_test=count,
            seed=seed,
        ).test_pixels()
        if len(out) < count:
            raise SystemExit(f"--n {n}: {photo} has {len(out)} test patches, fewer than its share {count}")
        pixels.append(out)
        sources += [photo] * count
        photos += [photo] * count
    return torch.cat(pixels), sources, photos


def timed_bpd(likelihood, z: torch.Tensor, batch: int) -> tuple[np.ndarray, float, int, np.ndarray]:
    """(BPD (N,), wall seconds, model evaluations, prior part (N,)) of dequantized patches z (N, 3, s, s) under
    ``likelihood`` (z batch -> LikelihoodResult), after a warm-up on one patch. The prior part is -log N(x0) of
    the point x0 reached at t = 0, in bits/dim; the rest of the BPD is the summed divergence (and the constant)."""
    dim = math.prod(z.shape[1:])
    likelihood(z[:1])
    start = time.perf_counter()
    results = [likelihood(chunk) for chunk in z.split(batch)]
    seconds = time.perf_counter() - start  # the prior part below is bookkeeping, outside the timed scoring
    values = bpd.bits_per_dim(bpd.pixel_nll(torch.cat([r.log_prob for r in results]).double(), dim), dim).numpy()
    prior = -standard_normal_log_prob(torch.cat([r.x0 for r in results])).double() / (dim * math.log(2))
    return values, seconds, sum(r.nfe for r in results), prior.numpy()


def reference_scorer(model, ref: dict, div: str, seed: int):
    """z batch -> LikelihoodResult: ``model``'s dopri5 solve of its velocity with ``ref``'s tolerances."""
    gen = torch.Generator().manual_seed(seed)

    def solve(z):
        return reference_log_likelihood(model, z, atol=ref["atol"], rtol=ref["rtol"], div=div, generator=gen)

    return solve


def scorers(cfg: dict, teacher: str, runs: dict, seed: int, own: bool = False, only: list[str] | None = None):
    """(run, method, likelihood) of every run's K = 1 (of those ``only`` names, where given; and, ``own``, each
    F2D2 run's own-flow reference) and of the teacher's reference (``eval`` settings)."""
    ev, ref = cfg["eval"], cfg["eval"]["reference"]
    out = []
    for run, (path, ckpt) in runs.items():
        if only and run not in only:
            continue
        model = model_of(ckpt, path).eval()
        div = "head" if model.has_div_head else ev["baseline_div"]
        gen = torch.Generator().manual_seed(seed)

        def k1(z, model=model, div=div, gen=gen):
            return log_likelihood(model, z, 1, div=div, backward=ev["backward"], generator=gen)

        out.append((run, "F2D2 K=1 (head)" if div == "head" else f"K=1 Euler ({div})", k1))
        if own and div == "head":
            out.append((run, OWN_FLOW.format(ref["div"]), reference_scorer(model, ref, ref["div"], seed)))
    model = model_of(runs[teacher][1], runs[teacher][0]).eval()
    for div in (ref["div"], "exact"):
        method = f"reference dopri5 ({div})" + (" subset" if div == "exact" else "")
        out.append((teacher, method, reference_scorer(model, ref, div, seed)))
    return out


def evaluate(args) -> dict:
    torch.set_num_threads(1)
    cfg = load_yaml(args.config)
    results = Path(args.results or (ROOT / cfg["outdir"]))
    teacher, runs = load_runs(cfg, results, args.runs)
    data_cfg = runs[teacher][1]["config"]["data"]
    if others := [run for run, (_, c) in runs.items() if c["config"]["data"] != data_cfg]:
        raise SystemExit(f"runs {others} trained on other data than the teacher {teacher!r}; expected one data set")
    pixels, sources, photos = patch_sets(data_cfg, args.n, args.seed, args.ood_photos)
    z = bpd.dequantize(pixels, torch.Generator().manual_seed(args.seed))
    is_out = np.array([s != "test" for s in sources])
    complexity = compressed_bits_per_dim(pixels, args.compressor).numpy()
    rng = np.random.default_rng([args.seed, 1])
    subset = np.sort(
        np.concatenate([rng.choice(np.flatnonzero(is_out == o), args.exact_n, replace=False) for o in (0, 1)])
    )
    batch = cfg["eval"].get("batch_size") or len(z)
    rows, scores, priors = [], {}, {}
    for run, method, likelihood in scorers(cfg, teacher, runs, args.seed, args.own_reference, args.runs):
        on = subset if method.endswith("subset") else np.arange(len(z))
        if len(on) == 0:
            continue
        values, seconds, nfe, prior = timed_bpd(likelihood, z[on], batch)
        scores[f"{run} {method}"], priors[f"{run} {method}"] = np.full(len(z), np.nan), np.full(len(z), np.nan)
        scores[f"{run} {method}"][on], priors[f"{run} {method}"][on] = values, prior
        rows.append({"run": run, "method": method, "n": len(on), "seconds": seconds, "nfe": nfe})
        print(f"  {run:24s} {method:32s} {len(on):5d} patches {seconds:9.3f} s", flush=True)
    exact = next((v for k, v in scores.items() if k.endswith("subset")), None)
    ref_div = cfg["eval"]["reference"]["div"]
    reference = scores[f"{teacher} reference dopri5 ({ref_div})"]
    reference_prior = priors[f"{teacher} reference dopri5 ({ref_div})"]
    for row, values, prior in zip(rows, scores.values(), priors.values()):
        row.update(summarize(values, complexity, is_out, sources, subset, exact, reference, photos, args.ood_photos))
        row["prior_shift_by_source"] = mean_by_group(prior - reference_prior, sources)
    rows.append(
        {
            "run": "-",
            "method": f"{args.compressor} bits/dim alone",
            "n": len(z),
            **summarize(complexity, None, is_out, sources, subset, None, None, photos, args.ood_photos),
        }
    )
    return {
        "command": " ".join(["python bench/ood.py", *args.argv]),
        "config": str(args.config),
        "results": str(results),
        "checkpoints": {run: str(p) for run, (p, _) in runs.items()},
        "data": data_cfg,
        "sources": {photo: PHOTOS[photo][:2] for photo in args.ood_photos},
        "n_in": int((~is_out).sum()),
        "n_out": int(is_out.sum()),
        "exact_n": args.exact_n,
        "seed": args.seed,
        "compressor": args.compressor,
        "eval": {k: cfg["eval"][k] for k in ("baseline_div", "backward", "reference")},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
        "target": target(rows, list(scores.values()), reference, is_out, args.seed, OWN_FLOW.format(ref_div)),
        "per_patch": {
            "source": sources,
            "photo": photos,
            f"{args.compressor} bits/dim": complexity.tolist(),
            **{k: v.tolist() for k, v in scores.items()},
            **{f"{k} prior": v.tolist() for k, v in priors.items()},
        },
    }


def mean_by_group(values: np.ndarray, groups) -> dict[str, float]:
    """{group: mean of ``values`` (N,) over its scored (finite) patches}, ``groups`` (N,) labels (the patches'
    sources or photos), in the order they first appear; a group with no scored patch is left out."""
    groups, scored = np.asarray(groups), np.isfinite(values)
    return {g: float(values[scored & (groups == g)].mean()) for g in dict.fromkeys(groups[scored])}


def _auroc(values, is_out, on) -> float | None:
    v, o = values[on], is_out[on]
    return auroc(v[~o], v[o]) if o.any() and (~o).any() and np.isfinite(v).all() else None


def summarize(values, complexity, is_out, sources, subset, exact, reference, photos, ood) -> dict:
    """AUROC of BPD ``values`` (N,) (NaN where not scored), per OOD photo (``ood``) and on the exact subset; unless
    None: corrected by ``complexity`` (N,), the mean |values - exact| on the subset, the mean shift from ``reference``
    (N,) of each set (a shift that differs between the sets moves the AUROC) and of the patches of each photo
    (``photos`` (N,): the held-out patches' training photos too, ``shift_by_photo``) and, with ``complexity`` too,
    how the held-out patches' shift follows their complexity (``f2d2.eval.ood.complexity_tilt``: ``tilt``)."""
    scored = np.isfinite(values)
    on = np.flatnonzero(scored)
    sources = np.array(sources)
    out = {
        "bpd_in": float(values[scored & ~is_out].mean()),
        "bpd_out": float(values[scored & is_out].mean()),
        "auroc": _auroc(values, is_out, on),
        "auroc_subset": _auroc(values, is_out, subset),
        "auroc_by_source": {p: _auroc(values, is_out, on[np.isin(sources[on], ["test", p])]) for p in ood},
    }
    if complexity is not None:
        s = values - complexity
        out["auroc_corrected"] = _auroc(s, is_out, on)
        out["auroc_corrected_subset"] = _auroc(s, is_out, subset)
        out["auroc_corrected_by_source"] = {p: _auroc(s, is_out, on[np.isin(sources[on], ["test", p])]) for p in ood}
        if exact is not None and len(subset):
            out["err_vs_exact_subset"] = float(np.abs(values[subset] - exact[subset]).mean())
    if reference is not None:
        shift, held_out = values - reference, scored & ~is_out
        out["shift_in"] = float(shift[held_out].mean())
        out["shift_out"] = float(shift[scored & is_out].mean())
        out["shift_by_source"], out["shift_by_photo"] = mean_by_group(shift, sources), mean_by_group(shift, photos)
        if complexity is not None and held_out.sum() >= 8:
            out["tilt"] = complexity_tilt(shift[held_out], complexity[held_out])
    return out


def target(
    rows: list[dict], values: list[np.ndarray], reference: np.ndarray, is_out, seed: int, own_method: str
) -> list[dict]:
    """Per F2D2 run: |AUROC - the reference's| <= 0.01 and the reference's seconds / its seconds >= 100; with the
    95% interval of the AUROC difference over 1000 paired bootstrap draws of each set (seeded), and the run's
    ``tilt`` (:func:`summarize`). Where the run's own flow (row ``own_method``) was scored: the same difference
    against it (``own_*``)."""
    ref = next(r for r in rows if r["method"].startswith("reference") and not r["method"].endswith("subset"))
    by_row = {(r["run"], r["method"]): (r, v) for r, v in zip(rows, values)}
    rng = np.random.default_rng([seed, 2])
    inside, outside = np.flatnonzero(~is_out), np.flatnonzero(is_out)
    draws = [(rng.choice(inside, len(inside)), rng.choice(outside, len(outside))) for _ in range(1000)]

    def interval(v, against) -> list[float]:
        """95% interval of AUROC(v) - AUROC(against) over the paired draws."""
        diff = [auroc(v[i], v[o]) - auroc(against[i], against[o]) for i, o in draws]
        return [float(q) for q in np.percentile(diff, [2.5, 97.5])]

    out = []
    for r, v in zip(rows, values):
        if r["method"].startswith("F2D2"):
            gap, speedup = abs(r["auroc"] - ref["auroc"]), ref["seconds"] / r["seconds"]
            row = {
                "run": r["run"],
                "auroc_difference": r["auroc"] - ref["auroc"],
                "auroc_difference_by_source": {
                    p: r["auroc_by_source"][p] - ref["auroc_by_source"][p] for p in r["auroc_by_source"]
                },
                "difference_95": interval(v, reference),
                "auroc_gap": gap,
                "corrected_difference": r["auroc_corrected"] - ref["auroc_corrected"],
                "speedup": speedup,
                "met": gap <= TARGET_GAP and speedup >= TARGET_SPEEDUP,
                "tilt": r.get("tilt"),
            }
            if (r["run"], own_method) in by_row:
                own, own_v = by_row[(r["run"], own_method)]
                row["own_auroc_difference"] = r["auroc"] - own["auroc"]
                row["own_difference_95"] = interval(v, own_v)
                row["own_speedup"] = own["seconds"] / r["seconds"]
            out.append(row)
    return out


def _f(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(res: dict) -> None:
    print(
        f"\n== OOD: {res['n_in']} held-out test patches vs {res['n_out']} patches of {', '.join(res['sources'])} "
        f"(seed {res['seed']}; corrected = BPD - {res['compressor']} bits/dim; {res['threads']} thread)"
    )
    head = f"{'run':24s} {'method':32s} {'BPD in':>7s} {'out':>7s} {'AUROC':>6s} {'corr':>6s} {'seconds':>9s}"
    head += (
        "".join(f" {p.split('_')[0]:>10s}" for p in res["sources"])
        + f" {'subset':>6s} {'corr':>6s} {'|-exact|':>8s} {'-ref in/out':>11s}"
    )
    print(head)
    for r in res["rows"]:
        line = f"{r['run']:24s} {r['method']:32s} {r['bpd_in']:7.3f} {r['bpd_out']:7.3f} {_f(r['auroc']):>6s} "
        line += f"{_f(r.get('auroc_corrected')):>6s} {_f(r.get('seconds')):>9s}"
        for p in res["sources"]:
            raw, corr = r["auroc_by_source"][p], r.get("auroc_corrected_by_source", {}).get(p)
            line += f" {_f(raw, '.2f') + '/' + _f(corr, '.2f'):>10s}"
        line += f" {_f(r['auroc_subset']):>6s} {_f(r.get('auroc_corrected_subset')):>6s}"
        shift = f"{_f(r.get('shift_in'), '+.2f')}/{_f(r.get('shift_out'), '+.2f')}"
        print(line + f" {_f(r.get('err_vs_exact_subset')):>8s} {shift:>11s}")
    print(
        f"per photo: AUROC raw/corrected; subset: {res['exact_n']} + {res['exact_n']} patches; |-exact|: mean "
        "per-patch distance to the exact reference there; -ref in/out: mean shift from the reference per set "
        "(bits/dim)"
    )
    for t in res["target"]:
        low, high = t["difference_95"]
        print(
            f"target {t['run']}: AUROC gap {t['auroc_gap']:.3f} (<= {TARGET_GAP}; difference "
            f"{t['auroc_difference']:+.3f}, 95% [{low:+.3f}, {high:+.3f}]; "
            f"corrected {t['corrected_difference']:+.3f}), "
            f"{t['speedup']:.0f}x faster (>= {TARGET_SPEEDUP:.0f}x): {'met' if t['met'] else 'NOT met'}"
        )
        row = next(r for r in res["rows"] if r["run"] == t["run"] and r["method"].startswith("F2D2"))
        print(
            "        per photo, AUROC - the reference's: "
            + ", ".join(f"{p.split('_')[0]} {d:+.3f}" for p, d in t["auroc_difference_by_source"].items())
            + "; BPD - the reference's: "
            + ", ".join(f"{p.split('_')[0]} {d:+.3f}" for p, d in row["shift_by_source"].items())
        )
        held = [p for p in row["shift_by_photo"] if p not in res["sources"]]
        print(
            "        held-out patches by their (training) photo, BPD - the reference's: "
            + ", ".join(f"{p.split('_')[0]} {row['shift_by_photo'][p]:+.3f}" for p in held)
            + f" (sd over the photos {np.std([row['shift_by_photo'][p] for p in held]):.3f})"
        )
        print(
            "        of that shift, the prior at the point reached at t = 0: "
            + ", ".join(f"{p.split('_')[0]} {d:+.3f}" for p, d in row["prior_shift_by_source"].items())
            + " (the rest: the summed divergence)"
        )
        if t["tilt"]:
            tilt = t["tilt"]
            print(
                f"        held-out BPD - reference against {res['compressor']} bits/dim: correlation "
                f"{tilt['corr']:+.2f}, simplest / most complex quarter {tilt['simplest']:+.3f} / "
                f"{tilt['most_complex']:+.3f} bits/dim"
            )
        if "own_auroc_difference" in t:
            low, high = t["own_difference_95"]
            print(
                f"        against its own flow: AUROC difference {t['own_auroc_difference']:+.3f} "
                f"(95% [{low:+.3f}, {high:+.3f}]), {t['own_speedup']:.0f}x faster"
            )


def write(out: Path, res: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ood.json").write_text(json.dumps(res, indent=1))
    keys = ["run", "method", "n", "bpd_in", "bpd_out", "auroc", "auroc_corrected", "auroc_subset", "seconds", "nfe"]
    with open(out / "ood.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(res["rows"])
    per = res["per_patch"]
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(per))
        w.writerows(zip(*per.values()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "config" / "patches.yaml"), help="stages and eval settings")
    p.add_argument("--results", help="the experiment folder holding train/<stage>/checkpoint.pt (default: outdir)")
    p.add_argument("--n", type=int, default=500, help="patches per set (in, out)")
    p.add_argument("--exact-n", type=int, default=40, help="patches per set scored by the exact-divergence reference")
    p.add_argument("--seed", type=int, default=0, help="patch draws, dequantization, Hutchinson probes")
    p.add_argument("--compressor", choices=COMPRESSORS, default="png")
    p.add_argument(
        "--ood-photos",
        nargs="+",
        choices=sorted(PHOTOS),
        default=list(OOD_PHOTOS),
        metavar="PHOTO",
        help=f"the OOD photos (default {' '.join(OOD_PHOTOS)}; an independent check: {' '.join(CHECK_PHOTOS)})",
    )
    p.add_argument(
        "--own-reference",
        action="store_true",
        help="also score each F2D2 run's own flow (dopri5 of its velocity) and compare its head's AUROC with it",
    )
    p.add_argument(
        "--runs", nargs="+", metavar="STAGE", help="score only these stages (the teacher's reference always)"
    )
    p.add_argument("--out", default=str(ROOT / "results" / "ood"), help="folder for ood.json, ood.csv, scores.csv")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if not 0 <= args.exact_n <= args.n:
        p.error(f"--exact-n {args.exact_n}: expected 0 .. --n ({args.n})")
    res = evaluate(args)
    print_table(res)
    write(Path(args.out), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
