"""The pipeline's evaluation cells, torch-free: for each trained run and step count K its NLL and sample
cells (guided samples for the F2D2 stages, a density cell for the runs the density figure shows), the
files each writes, where its job logs, and the `f2d2 nll` / `f2d2 sample` / `f2d2 eval --cell` arguments
that compute it; also the dopri5 reference solves. workflow/rules/eval.smk only wires these into rules,
one job per cell or one per run (eval.bundle): either way a cell's command and files are the same.

The argument strings are rule params, which Snakemake compares with those of the job that made a file:
a changed string reruns that job and everything after it, so they keep their exact text."""

from __future__ import annotations

import dataclasses
import re
import shlex

from f2d2.config import experiment
from f2d2.config.resolve import deep_merge
from f2d2.config.schema import defaults, section
from f2d2.config.solvers import FIXED_GRID_SOLVERS


def submit(log_dir: str, job_name: str) -> str:
    """`f2d2 submit --log-dir ... --job-name ...`, a rule's params.submit. Its shell command follows it with
    {resources.f2d2_submit} (the rules' ``submit_resources``) and then `-- <command>`."""
    return shlex.join(["f2d2", "submit", "--log-dir", log_dir, "--job-name", job_name])


def job_resources(cfg: dict, kind: str) -> dict:
    """The resources of a ``kind`` job (train, eval, or quality: eval's unless it has its own)."""
    return cfg["resources"].get(kind) or cfg["resources"]["eval"]


def device(cfg: dict, kind: str) -> str:
    """The device of a ``kind`` job (``job_resources``): cuda when its resources ask for GPUs, else cpu."""
    return "cuda" if job_resources(cfg, kind)["gpus"] > 0 else "cpu"


def bundle_rule(run: str, kind: str = "eval") -> str:
    """The name of a run's ``kind`` rule (eval: its evaluation bundle, importance: its importance-sampling cells):
    <kind>_<run>, with any character a rule name cannot take as _."""
    return f"{kind}_" + re.sub(r"\W", "_", run)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One evaluation: `f2d2 <command> <args>`, writing ``outputs`` ({name: path}). A cell's args lack
    --checkpoint and --device (its job adds them); a reference solve's include them. As a job of its own it
    logs to ``log_dir`` (submitit's files and snakemake.log) under the name ``job``."""

    command: str  # nll, sample or importance
    args: str  # shell-quoted
    outputs: dict[str, str]
    log_dir: str
    job: str

    @property
    def text(self) -> str:
        """The cell as `f2d2 eval --cell` takes it: "<command> <args>"."""
        return f"{self.command} {self.args}"

    @property
    def log(self) -> str:
        return f"{self.log_dir}/snakemake.log"

    @property
    def submit(self) -> str:
        return submit(self.log_dir, self.job)


def cell_flags(cells: list[Cell]) -> str:
    """`f2d2 eval`'s "--cell '<command> <args>'" for each of ``cells``, one string."""
    return " ".join(f"--cell {shlex.quote(cell.text)}" for cell in cells)


class Cells:
    """The evaluation of experiment config ``cfg`` (validated) under its outdir; ``images``: its data are
    images, whose sample cells also compute FID against ``fid_reference`` unless eval.fid.extractor is null
    (``sample_fid``)."""

    def __init__(self, cfg: dict, images: bool, config_file: str = "config/config.yaml"):
        self.out = cfg.get("outdir", "results")
        self.config_file = config_file  # the config as the rules name it (`f2d2 quality --config`)
        self.stages = list(cfg["stages"])
        self.eval = deep_merge(defaults(section("eval")), cfg["eval"])  # with the schema's defaults
        self.steps = list(self.eval["steps"])
        self.fid = self.eval["fid"]
        self.images = images
        self.sample_fid = images and self.fid["extractor"] is not None  # else sliced W2, as for points
        self.reference = experiment.reference_stage(cfg)  # the teacher of the NLL reference solve
        self.f2d2_runs = experiment.f2d2_runs(cfg)  # evaluated with their divergence head
        self.f2d2_stages = experiment.f2d2_stages(cfg)  # also sampled with guidance
        density = (cfg.get("figures") or {}).get("density", {})
        self.density_runs = list(density.get("runs", []))
        self.density_steps = density.get("steps")
        self.device = device(cfg, "eval")
        self.quality_device = device(cfg, "quality")
        self.test_points = f"{self.out}/eval/test_points.npy"
        self.density_grid = f"{self.out}/eval/density/grid.npy"
        self.fid_reference = f"{self.out}/eval/fid_reference.npz"
        batch = self.eval.get("batch_size")
        self.batch = ["--batch-size", str(batch)] if batch else []

    # ------------------------------------------------------------ files

    def checkpoint(self, run: str) -> str:
        """A run's checkpoint. Rules depend on its train.json (written when training has finished) instead,
        so that Snakemake never deletes a half-trained checkpoint that a rerun resumes from."""
        return f"{self.out}/train/{run}/checkpoint.pt"

    def nll_cell(self, run: str, k: int | str) -> str:
        """The summary (.json) of a run's NLL cell at K = ``k``; the per-point values are the .csv beside it."""
        return f"{self.out}/eval/nll/{run}/K{k}.json"

    def solver_cell(self, solver: str, nfe: int | str) -> str:
        """The summary (.json) of the reference teacher's ``solver`` NLL cell with ``nfe`` model evaluations."""
        return f"{self.out}/eval/nll/{self.reference}/{solver}_K{nfe}.json"

    def sample_cell(self, run: str, k: int | str, guided: bool = False) -> str:
        """The metrics (.json) of a run's sample cell at K = ``k``; the samples are the .npy beside it."""
        return f"{self.out}/eval/samples/{run}/K{k}{'_guided' if guided else ''}.json"

    def density_cell(self, run: str, k: int | str) -> str:
        return f"{self.out}/eval/density/{run}/K{k}.csv"

    def cell_log_dir(self, kind: str, run: str, cell: str) -> str:
        """Where an unbundled cell's job logs (kind: nll, samples or density; cell: e.g. K2 or K2_guided)."""
        return f"{self.out}/eval/{kind}/{run}/logs/{cell}"

    def bundle_log_dir(self, run: str) -> str:
        return f"{self.out}/eval/bundle/{run}/logs"

    def bundle_record(self, run: str) -> str:
        """`f2d2 eval --record`: each cell's seconds, beside the bundle's job.json."""
        return f"{self.bundle_log_dir(run)}/cells.json"

    # ------------------------------------------------------------ cells

    def div(self, run: str) -> str:
        """The divergence a run's NLL cells use: its head (F2D2 runs) or eval.baseline_div."""
        return "head" if run in self.f2d2_runs else self.eval["baseline_div"]

    def reference_solve(self, run: str, ckpt: str | None = None) -> Cell:
        """The dopri5 solve of the velocity of checkpoint ``ckpt`` (``run``'s if None) on the test points,
        writing eval/nll/<run>/reference.{csv,json} (outputs csv, json)."""
        folder = f"{self.out}/eval/nll/{run}"
        ref, batch = self.eval["reference"], shlex.join(self.batch)
        # an f-string, not shlex.join: without a batch size its text has two spaces before --out, kept as is
        args = (
            f"--checkpoint {shlex.quote(ckpt or self.checkpoint(run))} "
            f"--points {shlex.quote(self.test_points)} --reference --atol {ref['atol']} --rtol {ref['rtol']} "
            f"--div {ref['div']} --device {self.device} {batch} --out {shlex.quote(folder)}/reference.csv "
            f"--summary {shlex.quote(folder)}/reference.json"
        )
        outputs = {"csv": f"{folder}/reference.csv", "json": f"{folder}/reference.json"}
        job = "nll-reference" if run == self.reference else f"nll-reference-{run}"
        return Cell("nll", args, outputs, f"{folder}/logs/reference", job)

    def nll(self, run: str, k: int | str) -> Cell:
        """A run's NLL at K = ``k`` on the test points, compared point by point with the reference solve
        (outputs csv, json)."""
        json = self.nll_cell(run, k)
        csv = json.replace(".json", ".csv")
        args = ["--points", self.test_points, "--steps", str(k), "--div", self.div(run)]
        args += ["--backward", self.eval["backward"], "--compare", self.reference_solve(self.reference).outputs["csv"]]
        args += [*self.batch, "--out", csv, "--summary", json]
        log_dir = self.cell_log_dir("nll", run, f"K{k}")
        return Cell("nll", shlex.join(args), {"csv": csv, "json": json}, log_dir, f"nll-{run}-K{k}")

    def solver_nfes(self, solver: str) -> list[int]:
        """The K of eval.steps at which the teacher's ``solver`` cell exists: those a whole number of its steps
        reaches (``FIXED_GRID_SOLVERS``: model evaluations per step)."""
        return [k for k in self.steps if k % FIXED_GRID_SOLVERS[solver] == 0]

    def solver_cells(self) -> list[Cell]:
        """Table 7's stronger baselines (eval.teacher_solvers): each solver at each of its ``solver_nfes``."""
        return [self.solver_nll(s, k) for s in self.eval["teacher_solvers"] for k in self.solver_nfes(s)]

    def solver_nll(self, solver: str, nfe: int | str) -> Cell:
        """The reference teacher's NLL by ``nfe`` / (evaluations per step) fixed ``solver`` steps of its joint ODE
        with eval.baseline_div, compared point by point with the reference solve (outputs csv, json)."""
        json = self.solver_cell(solver, nfe)
        csv = json.replace(".json", ".csv")
        steps = int(nfe) // FIXED_GRID_SOLVERS[solver]
        args = ["--points", self.test_points, "--steps", str(steps), "--solver", solver]
        args += ["--div", self.eval["baseline_div"], "--compare", self.reference_solve(self.reference).outputs["csv"]]
        args += [*self.batch, "--out", csv, "--summary", json]
        log_dir = self.cell_log_dir("nll", self.reference, f"{solver}_K{nfe}")
        return Cell(
            "nll", shlex.join(args), {"csv": csv, "json": json}, log_dir, f"nll-{self.reference}-{solver}-K{nfe}"
        )

    def sample(self, run: str, k: int | str, guided: bool = False) -> Cell:
        """A run's samples at K = ``k``, with divergence-head guidance if ``guided`` (eval.guidance: lr_one_step
        at K = 1, lr_multi_step above), with FID for images unless eval.fid.extractor is null (outputs samples,
        json)."""
        n = self.fid.get("n_samples", self.eval["n_points"]) if self.images else self.eval["n_points"]
        args = ["--n", str(n), "--steps", str(k), "--seed", str(self.eval["sample_seed"])]
        if guided:
            g = self.eval["guidance"]
            lr = g["lr_one_step"] if int(k) == 1 else g["lr_multi_step"]
            args += ["--guidance-steps", str(g["steps"]), "--guidance-lr", str(lr)]
        if self.sample_fid:
            args += ["--fid-stats", self.fid_reference, "--fid-extractor", self.fid["extractor"]]
            args += ["--fid-weights-dir", self.fid["weights_dir"]]
        json = self.sample_cell(run, k, guided)
        npy = json.replace(".json", ".npy")
        args += [*self.batch, "--out", npy, "--metrics", json]
        cell = f"K{k}{'_guided' if guided else ''}"
        log_dir = self.cell_log_dir("samples", run, cell)
        return Cell("sample", shlex.join(args), {"samples": npy, "json": json}, log_dir, f"sample-{run}-{cell}")

    def density(self, run: str, k: int | str) -> Cell:
        """A run's NLL at K = ``k`` on the density figure's grid (output csv)."""
        csv = self.density_cell(run, k)
        args = ["--points", self.density_grid, "--steps", str(k), "--div", self.div(run)]
        args += ["--backward", self.eval["backward"], "--out", csv]
        log_dir = self.cell_log_dir("density", run, f"K{k}")
        return Cell("nll", shlex.join(args), {"csv": csv}, log_dir, f"density-{run}-K{k}")

    def importance(self, run: str, k: int | str | None, log_prob_from: str = "noise") -> Cell:
        """A run's self-normalised importance sampling (`f2d2 importance`, a cell of its run's importance job) with
        eval.importance.n samples (default eval.n_points) from the sample cells' noise seed: K = ``k`` steps with
        its NLL cells' divergence and log q from ``log_prob_from`` (the noise, or the sample), or for None the
        dopri5 reference of the joint ODE (output json: eval/importance/<run>/K<k>.json, K<k>_sample.json or
        reference.json)."""
        opts = self.eval["importance"]
        name = "reference" if k is None else f"K{k}" + ("" if log_prob_from == "noise" else f"_{log_prob_from}")
        json = f"{self.out}/eval/importance/{run}/{name}.json"
        args = ["--n", str(opts["n"] or self.eval["n_points"]), "--seed", str(self.eval["sample_seed"])]
        if k is None:
            args += ["--reference", "--div", self.eval["reference"]["div"]]
        else:
            args += ["--steps", str(k), "--div", self.div(run), "--log-prob-from", log_prob_from]
        if opts["target_fn"]:
            args += ["--target-fn", opts["target_fn"]]
        args += [*self.batch, "--out", json]
        log_dir = self.cell_log_dir("importance", run, name)
        return Cell("importance", shlex.join(args), {"json": json}, log_dir, f"importance-{run}-{name}")

    def importance_cells(self, data_name: str) -> dict[str, list[Cell]]:
        """{run: its importance-sampling cells}, computed by one job per run (``importance_log_dir``): each F2D2 stage
        and the reference stage (the teacher) at every K with every eval.importance.log_prob_from, and the
        teacher's dopri5 reference; none for images, nor for data other than the checkerboard without
        eval.importance.target_fn (no target to weigh by)."""
        opts = self.eval["importance"]
        if self.images or (data_name != "checkerboard" and not opts["target_fn"]):
            return {}
        runs = list(dict.fromkeys([*self.f2d2_stages, self.reference]))
        cells = {
            run: [self.importance(run, k, how) for k in self.steps for how in opts["log_prob_from"]] for run in runs
        }
        cells[self.reference].append(self.importance(self.reference, None))
        return cells

    def frontier(self) -> Cell | None:
        """The speed-accuracy frontier job (`f2d2 frontier`, eval.frontier; None when that is null): the F2D2 stages
        at every K against the reference teacher's solves (outputs json, csv, png under eval/frontier)."""
        opts = self.eval.get("frontier")
        if opts is None:
            return None
        opts = deep_merge(defaults(section("eval")["properties"]["frontier"]), opts)
        folder = f"{self.out}/eval/frontier"
        args = ["--teacher", self.checkpoint(self.reference)]
        for run in self.f2d2_stages:
            args += ["--run", f"{run}={self.checkpoint(run)}"]
        args += ["--points", self.test_points, "--n", str(opts["n"]), "--steps", *map(str, self.steps)]
        for key in ("euler", "midpoint", "rk4", "tols", "divs"):
            args += [f"--{key}", *map(str, opts[key])]
        args += ["--paired-rounds", str(opts["paired_rounds"]), *([] if opts["peer"] else ["--no-peer"])]
        args += ["--ref-tol", str(self.eval["reference"]["atol"]), "--ref-probes", str(opts["ref_probes"])]
        args += ["--speedup", str(opts["speedup"]), *self.batch, "--out", folder]
        outputs = {name: f"{folder}/frontier.{name}" for name in ("json", "csv", "png")}
        return Cell("frontier", shlex.join(args), outputs, f"{folder}/logs", "frontier")

    def quality(self) -> Cell | None:
        """The sample-quality job of an image experiment (`f2d2 quality`, eval.quality; None when that is null or the
        data are points): FID against held-out images of the reference teacher's samplers, the other flow-map
        stages at K = 1 and the F2D2 stages with and without eval.guidance (outputs json, csv, png under
        eval/quality)."""
        opts = self.eval.get("quality")
        if opts is None or not self.images:
            return None
        schema = section("eval")["properties"]["quality"]
        opts = deep_merge(defaults(schema), opts)
        folder = f"{self.out}/eval/quality"
        args = ["--config", self.config_file, "--teacher", f"{self.reference}={self.checkpoint(self.reference)}"]
        for run in self.stages:
            if run != self.reference and run not in self.f2d2_stages:
                args += ["--baseline", f"{run}={self.checkpoint(run)}"]
        for run in self.f2d2_stages:
            args += ["--run", f"{run}={self.checkpoint(run)}"]
        g = self.eval["guidance"]
        args += ["--n", str(opts["n"]), "--n-reference", str(opts["n_reference"]), "--steps", *map(str, opts["steps"])]
        args += ["--euler", str(opts["euler"]), "--reps", str(opts["reps"]), "--seed", str(self.eval["sample_seed"])]
        args += ["--guidance-steps", str(g["steps"])]
        args += ["--lr-one-step", str(g["lr_one_step"]), "--lr-multi-step", str(g["lr_multi_step"])]
        args += ["--no-teacher-bpd"] if opts["bpd_tol"] is None else ["--bpd-tol", str(opts["bpd_tol"])]
        sweep = opts["sweep"]
        if sweep is not None:
            sweep = deep_merge(defaults(schema["properties"]["sweep"]), sweep)
            args += ["--sweep-run", sweep["run"], "--sweep-steps", str(sweep["steps"])]
            args += ["--sweep-lrs", *map(str, sweep["lrs"]), "--sweep-adam", *map(str, sweep["adam"])]
            args += ["--sweep-n", str(sweep["n"])] if sweep["n"] else []
        args += ["--extractor", opts["extractor"] or self.fid["extractor"], "--weights-dir", self.fid["weights_dir"]]
        args += [*self.batch, "--device", self.quality_device, "--out", folder]
        outputs = {name: f"{folder}/quality.{name}" for name in ("json", "csv", "png")}
        return Cell("quality", shlex.join(args), outputs, f"{folder}/logs", "quality")

    def importance_log_dir(self, run: str) -> str:
        """Where a run's importance-sampling job logs, beside its ``f2d2 eval --record`` (cells.json)."""
        return f"{self.out}/eval/importance/{run}/logs"

    def run_cells(self, run: str) -> list[Cell]:
        """Every cell of a trained run, in its bundle's order: NLL and samples at every K, guided samples for
        the F2D2 stages, its density cell if the density figure shows it, and for the reference teacher its
        fixed-step solver cells (Table 7's stronger baselines)."""
        cells = [self.nll(run, k) for k in self.steps]
        for guided in (False, True) if run in self.f2d2_stages else (False,):
            cells += [self.sample(run, k, guided) for k in self.steps]
        if run in self.density_runs:
            cells.append(self.density(run, self.density_steps))
        if run == self.reference:
            cells += self.solver_cells()
        return cells
