# Names, paths and command fragments shared by the rules. No model logic: the experiment model
# (f2d2.config.experiment) says which runs there are and what they are; this file only decides
# which files exist and how they are named, the evaluation cells' through f2d2.config.cells (CELLS),
# which also builds their commands' arguments.

import os
import shlex

from snakemake.exceptions import WorkflowError

from f2d2.config import experiment
from f2d2.config.cells import Cells, bundle_rule, cell_flags, device, job_resources, submit
from f2d2.config.resolve import ConfigError, resolve_run
from f2d2.config.schema import section
from f2d2.preflight.checks import check_experiment
from f2d2.preflight.runs import own_flow_source, own_flow_stages, run_fingerprint, run_labels
from f2d2.data import IMAGE_NAMES, DataError, make_dataset

CLUSTER = config.get("cluster", section("cluster")["default"])
STAGES = list(config["stages"])

# Fail before any job on any bad value: the schema's checks again (the Snakefile's), unknown names
# and options, missing files, step counts the flow maps cannot take, resources this cluster cannot
# give (f2d2.preflight.checks), one line per bad key.
# Data files are checked on start (check_data), so that a dry run lists the DAG without the data.
try:
    check_experiment(config, data_files=False)
except ConfigError as e:
    raise WorkflowError(f"config {CONFIG_FILE}: {e}")

IMAGES = resolve_run(config)["data"]["name"] in IMAGE_NAMES
CELLS = Cells(config, IMAGES, CONFIG_FILE)  # the evaluation cells: their files and `f2d2` arguments (f2d2.config.cells)
OUT = CELLS.out
EVAL = CELLS.eval  # with the schema's defaults
STEPS = CELLS.steps
RUNS = experiment.runs(config)  # run -> (stage, [override, ...]): the stages, then the ablation runs
# Params of the rules, so that Snakemake redoes what a config edit changes: a run whose settings changed (and
# what reads it), the test points (and every cell) when the data changed.
RUN_FINGERPRINTS = {run: run_fingerprint(config, run) for run in RUNS}
# run -> its name in tables and figures (its stage's label, else its objective's): the gather rules' params.labels
LABELS = run_labels(config)
DATA_FINGERPRINT = experiment.fingerprint(resolve_run(config)["data"])
REFERENCE = CELLS.reference  # the teacher of the NLL reference solve
F2D2_STAGES = CELLS.f2d2_stages  # evaluated with their divergence head, and sampled with its guidance
OWN_FLOW_STAGES = own_flow_stages(config)  # also compared with their own flow's dopri5 solve
ABLATION_TABLES = experiment.ablation_tables(config)  # ablation name -> table number
FID = CELLS.fid
BUNDLE = EVAL["bundle"]  # one evaluation job per run (rule eval_<run>), else one per cell
DENSITY_RUNS = CELLS.density_runs
nll_cell, sample_cell, density_cell = CELLS.nll_cell, CELLS.sample_cell, CELLS.density_cell
# run -> its importance-sampling cells, one job each run (2D: the F2D2 stages and the teacher; none for images)
IMPORTANCE = CELLS.importance_cells(resolve_run(config)["data"]["name"])
FRONTIER = CELLS.frontier()  # the speed-accuracy frontier's job, or None
QUALITY = CELLS.quality()  # the sample-quality (FID, self-guidance) job of an image experiment, or None


def check_data():
    """Called on start (not in a dry run): missing data files stop the workflow before any job,
    with the DataError naming the path, the expected layout and where to get the files."""
    for stage in STAGES:
        try:
            make_dataset(resolve_run(config, stage)["data"])
        except DataError as e:
            raise WorkflowError(f"config {CONFIG_FILE}, stage {stage}: {e}")


def run_stage(run):
    return RUNS[run][0]


def run_overrides(run):
    return RUNS[run][1]


def trained(run):
    return f"{OUT}/train/{run}/train.json"


def run_inputs(run):
    """What a run reads: its warm start and its teacher (stage names in the config)."""
    return [trained(dep) for dep in experiment.dependencies(config, run)]


def submit_resources(kind):
    """The rule resources of a ``kind`` (train or eval) job: ``f2d2_submit``, the cluster and the config's
    resources as `f2d2 submit` flags. A resource, not a param: Snakemake reruns a job whose params changed,
    and asking for more time or another partition changes no result."""
    res = job_resources(config, kind)
    parts = ["--cluster", CLUSTER, "--gpus", str(res["gpus"]), "--cpus", str(res["cpus"]),
             "--mem-gb", str(res["mem_gb"]), "--time-min", str(res["time_min"])]
    for key in ("tasks_per_node", "signal_delay_s"):
        if key in res:
            parts += ["--" + key.replace("_", "-"), str(res[key])]
    partition = res.get("partition") or os.environ.get("F2D2_PARTITION")
    if partition:
        parts += ["--partition", partition]
    return {"f2d2_submit": shlex.join(parts)}


def job_log_dirs():
    """The log folder (job.json) of every submitit job of the experiment."""
    dirs = [f"{OUT}/train/{run}/logs" for run in RUNS]
    dirs += [CELLS.reference_solve(run).log_dir for run in [REFERENCE, *OWN_FLOW_STAGES]]
    if CELLS.sample_fid:
        dirs.append(f"{OUT}/eval/logs/fid_reference")
    dirs += [CELLS.importance_log_dir(run) for run in IMPORTANCE]
    dirs += [FRONTIER.log_dir] if FRONTIER is not None else []
    dirs += [QUALITY.log_dir] if QUALITY is not None else []
    if BUNDLE:
        return dirs + [CELLS.bundle_log_dir(run) for run in RUNS]
    return dirs + [cell.log_dir for run in RUNS for cell in CELLS.run_cells(run)]


def compute_share_files():
    return [f"{OUT}/tables/compute_share.json", f"{OUT}/tables/compute_share.txt"]


def main_table_cells():
    nll = [nll_cell(r, k) for r in STAGES for k in STEPS]
    samples = [sample_cell(r, k) for r in STAGES for k in STEPS]
    return nll, samples


def all_targets():
    tables = [f"{OUT}/tables/table{n}.csv" for n in (1, 3, 4, 7, *ABLATION_TABLES.values())]
    tables += [f"{OUT}/tables/{name}.html" for name in ("table1", "table7", "headline")]
    figures = [f"{OUT}/figures/figure2.png", f"{OUT}/figures/training_curves.png"]
    if "density" in (config.get("figures") or {}):
        figures.append(f"{OUT}/figures/figure3.png")
    if IMPORTANCE:
        tables.append(f"{OUT}/tables/table_is.csv")
        figures.append(f"{OUT}/figures/figure_is.png")
    if FRONTIER is not None:
        figures.append(FRONTIER.outputs["png"])
    if QUALITY is not None:
        figures.append(QUALITY.outputs["png"])
    return tables + figures + compute_share_files()
