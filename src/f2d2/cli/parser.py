"""The ``f2d2`` argument parser, free of torch so that ``f2d2 submit`` and ``--help`` start fast.

Subcommands: train, nll, sample, importance, data, fid-reference, import-meanflow, objectives, export (each
stands alone), eval (several nll, sample and importance cells of one checkpoint, loaded once), and
``f2d2 submit [options] -- <subcommand> ...``, which runs one of them as a job (SLURM, local or inline).

Points files are ``.npy`` or ``.csv`` arrays of shape (N, dim), or uint8 images (N, C, H, W). Times run from
t = 0 (noise) to t = 1 (data).
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from f2d2.config.resources import CLUSTERS, DEFAULT_CLUSTER, RESOURCE_DEFAULTS
from f2d2.config.schema import section
from f2d2.config.solvers import FIXED_GRID_SOLVERS
from f2d2.core.options import BACKWARD_MODES, DIVERGENCE_SOURCES, LOG_PROB_FROM

FID_OPTIONS = section("eval.fid")["properties"]  # the FID extractors and defaults, as the config states them
EXTRACTORS = tuple(name for name in FID_OPTIONS["extractor"]["enum"] if name is not None)  # null: no FID

COMMANDS = (
    "train",
    "nll",
    "sample",
    "importance",
    "eval",
    "frontier",
    "quality",
    "data",
    "fid-reference",
    "import-meanflow",
    "export",
)
CELL_COMMANDS = ("nll", "sample", "importance")  # what an ``f2d2 eval`` cell can be
CELL_SHARED = ("--checkpoint", "--device", "--raw")  # given once to ``f2d2 eval``, not per cell


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; ``args.command`` names the one given."""
    p = argparse.ArgumentParser(prog="f2d2", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _add_train,
        _add_nll,
        _add_sample,
        _add_importance,
        _add_eval,
        _add_frontier,
        _add_quality,
        _add_data,
        _add_fid_reference,
        _add_import_meanflow,
        _add_objectives,
        _add_export,
        _add_submit,
    ):
        add(sub)
    return p


def add_frontier_grid(p: argparse.ArgumentParser) -> None:
    """The solves of a speed-accuracy frontier (``f2d2 frontier``, bench/frontier.py): F2D2 K and the teacher's
    step counts, tolerances and divergences, the reference, the seed and the K = 1 target."""
    p.add_argument("--steps", type=_positive_int, nargs="+", default=[1, 2, 4, 8], help="K of the F2D2 runs")
    p.add_argument("--euler", type=_positive_int, nargs="*", default=[1, 2, 4, 8, 16, 32, 64], help="Euler step counts")
    p.add_argument(
        "--midpoint", type=_positive_int, nargs="*", default=[1, 2, 4, 8, 16, 32], help="midpoint step counts"
    )
    p.add_argument("--rk4", type=_positive_int, nargs="*", default=[1, 2, 4, 8, 16], help="RK4 step counts")
    p.add_argument("--tols", type=float, nargs="*", default=[1e-2, 1e-3, 1e-4, 1e-5], help="dopri5 atol = rtol")
    p.add_argument(
        "--divs", nargs="+", choices=("exact", "hutchinson"), default=["exact", "hutchinson"], help="the teacher's"
    )
    p.add_argument("--no-peer", action="store_true", help="skip flow_matching's ODESolver (the peer)")
    p.add_argument(
        "--paired-rounds",
        type=_positive_int,
        default=9,
        help="alternating timing rounds: each dopri5 solve and its peer, each K = 1 and its matched teacher solve",
    )
    p.add_argument("--ref-tol", type=float, default=1e-5, help="the reference dopri5's atol = rtol")
    p.add_argument(
        "--ref-probes", type=int, default=0, help="0: exact divergence in the reference; > 0: mean of that many probes"
    )
    p.add_argument("--speedup", type=float, default=10.0, help="K = 1 target: x faster than a teacher as accurate")
    p.add_argument("--seed", type=int, default=0, help="seed of the probes (and of image dequantization)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="points per batch (default: all at once)")


def _named_checkpoint(text: str) -> tuple[str, Path]:
    """NAME=PATH (a run's name and its checkpoint) -> (name, path)."""
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"{text!r}; expected NAME=PATH (a run's name and its checkpoint)")
    return name, Path(path)


def _add_frontier(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "frontier",
        help="the speed-accuracy frontier: F2D2 K-step likelihoods against the teacher's ODE solvers",
        description=(
            "Score the first --n of --points (data at t = 1) by every F2D2 --run at each K and by the --teacher's "
            "joint ODE with Euler, midpoint, RK4 and dopri5 (f2d2's and flow_matching's), one thread, side by "
            "side: mean |NLL - reference NLL| (nats), NFE, seconds, the Pareto front. Writes --out/frontier.json, "
            "frontier.csv and frontier.png."
        ),
    )
    f.add_argument("--teacher", required=True, type=Path, help="the teacher's checkpoint (or exported folder)")
    f.add_argument(
        "--run",
        action="append",
        default=[],
        type=_named_checkpoint,
        metavar="NAME=PATH",
        help="an F2D2 run's checkpoint (repeatable)",
    )
    f.add_argument("--points", required=True, type=Path, help=".npy of test points (N, dim) or uint8 images")
    f.add_argument("--n", type=_positive_int, default=1000, help="how many of the points (the first n)")
    f.add_argument("--out", required=True, type=Path, help="folder for frontier.json, .csv, .png")
    f.add_argument("--title", default="", help="the figure's title")
    f.add_argument("--device", default="cpu", help="torch device to measure on, e.g. cpu or cuda")
    add_frontier_grid(f)


def _add_quality(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "quality",
        help="sample quality of image runs: FID with bootstrap intervals, self-guidance paired with its twin",
        description=(
            "FID against --n-reference held-out images of --config's data (its test split) of: the teacher's "
            "dopri5 and --euler-step samples, each --baseline at K = 1, each F2D2 --run at every --steps K unguided "
            "and self-guided (paired with the unguided samples of the same noise), held-out images (the floor), and "
            "the guidance sweep of --sweep-run. Each cell is cached under --out/cells; writes --out/quality.json, "
            "quality.csv and quality.png."
        ),
    )
    q.add_argument("--config", required=True, type=Path, help="the experiment config (its data: the held-out images)")
    q.add_argument("--teacher", required=True, type=_named_checkpoint, metavar="NAME=PATH", help="the teacher")
    q.add_argument("--baseline", action="append", default=[], type=_named_checkpoint, metavar="NAME=PATH",
                   help="a baseline flow map, sampled at K = 1 (repeatable)")  # fmt: skip
    q.add_argument("--run", action="append", default=[], type=_named_checkpoint, metavar="NAME=PATH",
                   help="an F2D2 run, sampled at every --steps with and without guidance (repeatable)")  # fmt: skip
    q.add_argument("--out", required=True, type=Path, help="folder for quality.json, .csv, .png and cells/")
    q.add_argument("--n", type=_positive_int, default=1000, help="samples per cell")
    q.add_argument("--n-reference", type=_positive_int, default=1000, help="held-out images in the reference")
    q.add_argument("--steps", type=_positive_int, nargs="+", default=[1, 2], help="K of the F2D2 runs")
    q.add_argument("--euler", type=_positive_int, default=64, help="the many-step teacher's Euler steps")
    q.add_argument("--guidance-steps", type=_positive_int, default=1, help="Adam steps of the guided cells")
    q.add_argument("--lr-one-step", type=float, default=0.1, help="guidance learning rate at K = 1")
    q.add_argument("--lr-multi-step", type=float, default=0.05, help="guidance learning rate at K > 1")
    q.add_argument("--sweep-run", default=None, help="the run of the guidance sweep (one of --run; default none)")
    q.add_argument("--sweep-steps", type=_positive_int, default=2, help="K of the sweep")
    q.add_argument("--sweep-lrs", type=float, nargs="*", default=[0.02, 0.05, 0.2], help="the sweep's learning rates")
    q.add_argument("--sweep-adam", type=_positive_int, nargs="*", default=[1, 4], help="the sweep's Adam steps")
    q.add_argument("--sweep-n", type=_positive_int, default=None, help="samples per sweep cell (default --n)")
    q.add_argument("--reps", type=_positive_int, default=25, help="bootstrap replicates per cell")
    q.add_argument("--seed", type=int, default=777, help="seed of the noise, the held-out split and the bootstrap")
    q.add_argument("--no-teacher-bpd", action="store_true", help="skip the teacher's BPD of each cell's images")
    q.add_argument("--bpd-tol", type=float, default=1e-4, help="atol = rtol of the teacher's BPD (dopri5) solve")
    q.add_argument("--extractor", choices=EXTRACTORS, default=FID_OPTIONS["extractor"]["default"],
                   help="FID features (default %(default)s)")  # fmt: skip
    q.add_argument("--weights-dir", type=Path, default=Path(FID_OPTIONS["weights_dir"]["default"]),
                   help="folder that may hold clean-fid's inception-2015-12-05.pt")  # fmt: skip
    q.add_argument("--batch-size", type=_positive_int, default=250, help="samples per batch")
    q.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def _add_objectives(sub: argparse._SubParsersAction) -> None:
    o = sub.add_parser(
        "objectives",
        help="list every objective's options (default, allowed values, meaning) as Markdown",
        description="Every objective name of the config and its options, read off their declarations.",
    )
    o.add_argument("--out", type=Path, default=None, help="write the Markdown here (default: print it)")


def _add_tolerances(p: argparse.ArgumentParser) -> None:
    """--atol / --rtol of the adaptive (dopri5) reference solve."""
    p.add_argument("--atol", type=float, default=1e-5, help="reference solver absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-5, help="reference solver relative tolerance")


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="train one stage of an experiment config",
        description=(
            "Train one run. The run config is the experiment file's shared sections merged with "
            "stages.<STAGE>; re-running on the same --workdir resumes from its checkpoint."
        ),
    )
    t.add_argument("--config", required=True, type=Path, help="experiment YAML file")
    t.add_argument("--stage", default=None, help="name under the config's 'stages' to train (default: none)")
    t.add_argument("--workdir", required=True, type=Path, help="folder for checkpoint.pt, metrics.jsonl, config.yaml")
    t.add_argument(
        "--stage-root",
        type=Path,
        default=None,
        help="folder holding one workdir per stage, for stage names used as train.init_from or "
        "objective.teacher (default: the parent of --workdir)",
    )
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run-config value after stage merging, e.g. train.steps=100 (repeatable)",
    )
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument(
        "--restart-on-change",
        action="store_true",
        help="when --workdir holds a checkpoint of another config, move it into --workdir/stale/ and train afresh "
        "(default: refuse); the pipeline passes it, since it reruns a run only when its settings changed",
    )
    t.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="when training has finished, write a JSON summary here (checkpoint path, steps, last "
        "logged losses, wall time); a pipeline can depend on it instead of the checkpoint",
    )


def _add_nll(sub: argparse._SubParsersAction) -> None:
    n = sub.add_parser(
        "nll",
        help="per-point negative log-likelihood of points under a checkpoint",
        description=(
            "Integrate from data (t = 1) to noise (t = 0): --steps K uniform flow-map/Euler steps, or --reference "
            "for the adaptive dopri5 solve with the instantaneous velocity. Writes one row per point."
        ),
    )
    n.add_argument("--checkpoint", required=True, type=Path, help="f2d2 checkpoint.pt")
    n.add_argument("--points", required=True, type=Path, help=".npy or .csv of shape (N, dim) to evaluate")
    n.add_argument("--out", required=True, type=Path, help="output .csv (columns nll_nats, bpd[, ...]) or .npy")
    how = n.add_mutually_exclusive_group(required=True)
    how.add_argument("--steps", type=_positive_int, help="K, the number of steps")
    how.add_argument("--reference", action="store_true", help="adaptive dopri5 solve (the yardstick)")
    n.add_argument(
        "--solver",
        choices=[s for s in FIXED_GRID_SOLVERS if s != "euler"],  # Euler: --steps K without --solver
        default=None,
        help="with --steps K: K fixed steps of this method on the joint ODE of the instantaneous velocity "
        "(2 or 4 model evaluations per step; a stronger baseline than K Euler/flow-map steps)",
    )
    n.add_argument(
        "--div",
        choices=DIVERGENCE_SOURCES,
        default=None,
        help="divergence source: 'head' (F2D2, default when the model has one) or 'exact' / "
        "'hutchinson' of the instantaneous velocity (default otherwise; the reference uses exact)",
    )
    n.add_argument(
        "--backward",
        choices=BACKWARD_MODES,
        default="two-way",
        help="how a flow map takes backward steps: query u(x, s, t) with s > t ('two-way') or reuse "
        "the forward map of the reversed interval ('forward-only', the paper's first-order trick)",
    )
    _add_tolerances(n)
    n.add_argument("--batch-size", type=_positive_int, default=10000, help="points per batch")
    n.add_argument("--seed", type=int, default=0, help="seed of Hutchinson probes")
    n.add_argument(
        "--dequant-seed",
        type=int,
        default=0,
        help="image checkpoints: seed of the uniform dequantization noise (points are then uint8 images "
        "(N, C, H, W) and bpd includes the dequantization terms, see f2d2.eval.bpd)",
    )
    n.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    n.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="a previous nll output (e.g. the reference) to report mean |NLL - NLL_compare| against",
    )
    n.add_argument("--summary", type=Path, default=None, help="also write the printed summary as JSON here")
    n.add_argument("--device", default="cpu", help="torch device to evaluate on, e.g. cpu or cuda")


def _add_sample(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "sample",
        help="draw samples with K steps",
        description=(
            "Push N(0, I) noise (t = 0) to data (t = 1) with K uniform steps of the checkpoint's flow map "
            "(Euler steps of its velocity for a flow-matching model), or --reference for the adaptive dopri5 "
            "solve with the instantaneous velocity."
        ),
    )
    s.add_argument("--checkpoint", required=True, type=Path, help="f2d2 checkpoint.pt")
    s.add_argument("--n", required=True, type=_positive_int, help="number of samples")
    s_how = s.add_mutually_exclusive_group(required=True)
    s_how.add_argument("--steps", type=_positive_int, help="K, the number of steps")
    s_how.add_argument("--reference", action="store_true", help="adaptive dopri5 solve (the yardstick)")
    _add_tolerances(s)
    s.add_argument("--out", required=True, type=Path, help="output .npy or .csv of shape (N, dim)")
    s.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    s.add_argument(
        "--batch-size",
        type=_positive_int,
        default=10000,
        help="samples per batch (the noise is drawn at once, so results do not depend on it)",
    )
    s.add_argument(
        "--guidance-steps",
        type=int,
        default=0,
        help="maximum-likelihood self-guidance: Adam steps on the noise before sampling (F2D2 models; default 0 = off)",
    )
    s.add_argument("--guidance-lr", type=float, default=None, help="learning rate of the self-guidance Adam steps")
    s.add_argument(
        "--log-prob",
        action="store_true",
        help="also write each sample's log-density in nats, from the same forward steps, beside --out as "
        "<stem>.log_prob<suffix> (column log_prob_nats; images: of the sample in model space, before 8-bit "
        "rounding). F2D2 models: the head along the flow-map jumps; others: Euler steps of the joint ODE",
    )
    s.add_argument(
        "--div",
        choices=DIVERGENCE_SOURCES,
        default=None,
        help="with --log-prob, the divergence source: 'head' (default when the model has one) or 'exact' / "
        "'hutchinson' of the instantaneous velocity, Euler steps (default otherwise; the reference uses exact)",
    )
    _add_log_prob_from(s, "with --log-prob, ")
    s.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help="also write sample-quality metrics as JSON here: sliced W2 to fresh data of the checkpoint's "
        "dataset (images: training images, or FID with --fid-stats) and, for analytic datasets, the share of "
        "samples on the support",
    )
    s.add_argument("--device", default="cpu", help="torch device to sample on, e.g. cpu or cuda")
    s.add_argument(
        "--fid-stats",
        type=Path,
        default=None,
        help="image checkpoints: reference statistics (.npz from f2d2 fid-reference); --metrics then holds FID",
    )
    s.add_argument(
        "--fid-extractor",
        default=FID_OPTIONS["extractor"]["default"],
        choices=EXTRACTORS,
        help="FID features: clean-fid's Inception or a fixed tiny conv net (no weights needed); default %(default)s",
    )
    s.add_argument(
        "--fid-weights-dir",
        type=Path,
        default=Path(FID_OPTIONS["weights_dir"]["default"]),
        help="folder holding inception-2015-12-05.pt (default %(default)s, clean-fid's)",
    )


def _add_log_prob_from(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument(
        "--log-prob-from",
        choices=LOG_PROB_FROM,
        default="noise",
        help=f"{prefix}where log q is computed: 'noise' (default), along the forward steps that draw each sample; "
        "'sample', the likelihood of each returned sample, K backward steps from it (f2d2.log_prob; twice the "
        "evaluations). An F2D2 head's forward log q is about the teacher's density at the teacher's endpoint of "
        "the noise, not at the sample: importance weights want 'sample'",
    )


def _add_importance(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser(
        "importance",
        help="self-normalised importance sampling of a 2D target with a checkpoint's samples and their log q",
        description=(
            "Draw --n samples with their log q (f2d2.sample(..., log_prob=True)): --steps K forward steps, or "
            "--reference for the adaptive dopri5 solve of the joint ODE (atol = rtol = 1e-5); weight them by an "
            "unnormalised target log p~ and write a JSON cell: ESS per sample, the estimate of log Z and of test "
            "expectations (with the truth where known), and the wall seconds of the sampling and log q."
        ),
    )
    i.add_argument("--checkpoint", required=True, type=Path, help="f2d2 checkpoint.pt of a 2D model")
    i.add_argument("--n", required=True, type=_positive_int, help="number of samples")
    how = i.add_mutually_exclusive_group(required=True)
    how.add_argument("--steps", type=_positive_int, help="K, the number of forward steps")
    how.add_argument("--reference", action="store_true", help="adaptive dopri5 solve of the joint ODE (yardstick)")
    i.add_argument("--seed", type=int, default=0, help="seed of the noise (as f2d2 sample --seed draws it)")
    i.add_argument("--out", required=True, type=Path, help="the cell: a .json file")
    i.add_argument(
        "--div",
        choices=DIVERGENCE_SOURCES,
        default=None,
        help="divergence of log q: 'head' (default when the model has one) or 'exact' / 'hutchinson' of the "
        "instantaneous velocity, Euler steps of the joint ODE (default otherwise; the reference uses exact)",
    )
    _add_log_prob_from(i, "")
    target = i.add_mutually_exclusive_group()
    target.add_argument(
        "--target",
        choices=("checkerboard",),
        default="checkerboard",
        help="the indicator of the checkerboard's support at the checkpoint's data scale (log Z and E|x|^2, "
        "E[x1 x2] known in closed form); the default",
    )
    target.add_argument(
        "--target-fn",
        default=None,
        metavar="PACKAGE.MODULE:FUNCTION",
        help="your own unnormalised log-density: a function from points x (N, d) to log p~(x) (N,), -inf where "
        "the density is 0 (importable, e.g. on PYTHONPATH); its log Z and expectations are then unknown",
    )
    i.add_argument(
        "--batch-size",
        type=_positive_int,
        default=10000,
        help="samples per batch (the noise is drawn at once, so results do not depend on it)",
    )
    i.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    i.add_argument("--device", default="cpu", help="torch device to sample on, e.g. cpu or cuda")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "eval",
        help="several nll, sample and importance cells of one checkpoint, loaded once",
        description=(
            "Load --checkpoint once, then compute each --cell, an 'nll ...', 'sample ...' or 'importance ...' command "
            "line without --checkpoint, --device and --raw, in the order given. Each cell writes exactly the files, "
            "with the same numbers and seeds, that the same f2d2 nll, sample or importance would write; its "
            "'seconds' time that cell's own computation."
        ),
    )
    e.add_argument("--checkpoint", required=True, type=Path, help="f2d2 checkpoint.pt")
    e.add_argument(
        "--cell",
        dest="cells",
        action="append",
        required=True,
        type=_cell_tokens,
        metavar="'CMD ARGS'",
        help="one cell: 'nll --points p.npy --steps 2 --out K2.csv --summary K2.json', "
        "'sample --n 100 --steps 1 --out K1.npy --metrics K1.json', ... (repeatable)",
    )
    e.add_argument(
        "--record",
        type=Path,
        default=None,
        help="write a JSON record here: each cell's command, output, seconds (its summary's) and "
        "cell_seconds (the whole cell, writing its files included), and their sums",
    )
    e.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    e.add_argument("--device", default="cpu", help="torch device to evaluate on, e.g. cpu or cuda")


def _cell_tokens(text: str) -> list[str]:
    """An ``f2d2 eval --cell`` string as tokens, checked by its subcommand's own parser."""
    tokens = shlex.split(text)
    if not tokens or tokens[0] not in CELL_COMMANDS:
        raise argparse.ArgumentTypeError(f"{text!r} does not start with one of {', '.join(CELL_COMMANDS)}")
    shared = [t for t in tokens if t.split("=")[0] in CELL_SHARED]
    if shared:
        raise argparse.ArgumentTypeError(f"{text!r}: give {', '.join(shared)} to f2d2 eval, not to a cell")
    _parse_cell(tokens, Path("checkpoint.pt"), "cpu", False)
    return tokens


def _parse_cell(tokens: list[str], checkpoint: Path, device: str, raw: bool) -> argparse.Namespace:
    err = io.StringIO()
    argv = [tokens[0], "--checkpoint", str(checkpoint), "--device", device, *(["--raw"] if raw else []), *tokens[1:]]
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv)
    except SystemExit:
        said = err.getvalue().strip().splitlines()
        reason = said[-1] if said else "only prints help"
        raise argparse.ArgumentTypeError(f"{shlex.join(tokens)!r}: {reason}") from None


def cell_namespaces(args: argparse.Namespace) -> list[argparse.Namespace]:
    """The cells of a parsed ``f2d2 eval``, each as its own subcommand's arguments with the eval's checkpoint,
    device and --raw."""
    return [_parse_cell(tokens, args.checkpoint, args.device, args.raw) for tokens in args.cells]


def _add_data(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "data",
        help="write a config's test points: fresh draws of an analytic 2D set, held-out "
        "rows of a point file, or test images (image data)",
    )
    d.add_argument("--config", required=True, type=Path, help="experiment YAML file (its data section is used)")
    d.add_argument(
        "--n",
        required=True,
        type=_positive_int,
        help="number of points (a held-out split or test set with fewer: all of it)",
    )
    d.add_argument("--seed", type=int, required=True, help="seed; use one that no training run uses")
    d.add_argument("--out", type=Path, default=None, help="output .npy or .csv of shape (N, dim)")
    d.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="write where the points come from as JSON here (the tables' test_split column); needs no --out",
    )


def _add_fid_reference(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "fid-reference",
        help="FID reference statistics of a config's training images",
        description="Features of the training images through clean-fid; mean and covariance to --out.",
    )
    f.add_argument("--config", required=True, type=Path, help="experiment YAML file (its data section is used)")
    f.add_argument("--out", required=True, type=Path, help="output .npz (mu, sigma)")
    f.add_argument("--n", type=_positive_int, default=None, help="use a seeded subset of n images (default: all)")
    f.add_argument(
        "--extractor",
        default=FID_OPTIONS["extractor"]["default"],
        choices=EXTRACTORS,
        help="feature extractor (default %(default)s)",
    )
    f.add_argument(
        "--weights-dir",
        type=Path,
        default=Path(FID_OPTIONS["weights_dir"]["default"]),
        help="folder holding inception-2015-12-05.pt (default %(default)s)",
    )
    f.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def _add_import_meanflow(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "import-meanflow",
        help="convert an official MeanFlow CIFAR-10 checkpoint to an f2d2 one",
        description=(
            "Read a py-meanflow checkpoint (t = 0 data there), map its U-Net keys and flip "
            "its time convention; the result serves as train.init_from or a teacher."
        ),
    )
    m.add_argument("--checkpoint", required=True, type=Path, help="the official checkpoint-*.pth")
    m.add_argument("--out", required=True, type=Path, help="f2d2 checkpoint.pt to write")
    m.add_argument("--weights", default="net_ema", help="which weights: net, net_ema (default), net_ema1, ...")
    m.add_argument("--data-root", type=Path, default=Path("data/cifar10"), help="CIFAR-10 root recorded in it")


def _add_export(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser(
        "export",
        help="write a checkpoint's weights as a shareable folder (model.safetensors + config.json)",
        description=(
            "Write --checkpoint's EMA weights (--raw: the raw ones) as model.safetensors and the network's config "
            "with its provenance as config.json into --out; f2d2.load and f2d2.log_prob read the folder, no pickle."
        ),
    )
    x.add_argument("--checkpoint", required=True, type=Path, help="f2d2 checkpoint.pt to export")
    x.add_argument("--out", required=True, type=Path, help="folder to write (created if absent)")
    x.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")


def _add_submit(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser(
        "submit",
        help="run one f2d2 command as a job (SLURM, local or inline) and wait for it",
        usage="f2d2 submit [options] --log-dir DIR -- <subcommand> <args...>",
        description=(
            "Run the f2d2 command given after '--' as a submitit job and wait for it. Logs and job.json land in "
            "--log-dir; a failed job exits with code 1 and prints its id, error tail and log paths."
        ),
    )
    j.add_argument(
        "--cluster",
        metavar="{" + ",".join(CLUSTERS) + "}",
        default=os.environ.get("F2D2_CLUSTER", DEFAULT_CLUSTER),
        help="where to run: 'slurm', 'local' (a subprocess here) or 'inline' (this process); "
        f"default: $F2D2_CLUSTER, else {DEFAULT_CLUSTER}",
    )
    j.add_argument("--log-dir", required=True, type=Path, help="folder for the job's logs and job.json")
    res = RESOURCE_DEFAULTS
    j.add_argument("--partition", default=res["partition"], help="SLURM partition (ignored by local and inline runs)")
    j.add_argument("--gpus", type=int, default=res["gpus"], help="GPUs per node (default %(default)s)")
    j.add_argument("--cpus", type=int, default=res["cpus"], help="CPUs per task (default %(default)s)")
    j.add_argument("--mem-gb", type=float, default=res["mem_gb"], help="memory in GB (default %(default)s)")
    j.add_argument("--time-min", type=int, default=res["time_min"], help="time limit in minutes (default %(default)s)")
    j.add_argument(
        "--tasks-per-node",
        type=int,
        default=res["tasks_per_node"],
        help="tasks per node, each runs the command (default %(default)s)",
    )
    j.add_argument(
        "--signal-delay-s",
        type=int,
        default=res["signal_delay_s"],
        help="on SLURM, seconds before the time limit at which the job is told to checkpoint and "
        "requeue (default %(default)s)",
    )
    j.add_argument("--job-name", default=None, help="job name (default: f2d2-<subcommand>)")
    j.add_argument(
        "job",
        nargs="*",
        metavar="-- COMMAND",
        help="the f2d2 command to run, after '--', e.g. -- train --config c.yaml --workdir w",
    )
