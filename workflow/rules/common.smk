# Names, paths and command fragments shared by the rules. No model logic: the experiment model
# (f2d2.config.experiment) says which runs there are and what they are; this file only decides
# which files exist and how they are named.

import os
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError

from f2d2.config import experiment
from f2d2.preflight.checks import check_experiment
from f2d2.preflight.runs import run_fingerprint, run_labels
from f2d2.config.resolve import ConfigError, deep_merge, resolve_run
from f2d2.config.schema import defaults, section
from f2d2.data import IMAGE_NAMES, DataError, make_dataset

OUT = config.get("outdir", "results")
CLUSTER = config.get("cluster", section("cluster")["default"])
STAGES = list(config["stages"])
EVAL = deep_merge(defaults(section("eval")), config["eval"])  # with the schema's defaults
STEPS = list(EVAL["steps"])

# Fail before any job on any bad value: the schema's checks again (the Snakefile's), unknown names
# and options, missing files, step counts the flow maps cannot take, resources this cluster cannot
# give (f2d2.preflight.checks), one line per bad key.
# Data files are checked on start (check_data), so that a dry run lists the DAG without the data.
try:
    check_experiment(config, data_files=False)
except ConfigError as e:
    raise WorkflowError(f"config {CONFIG_FILE}: {e}")

IMAGES = resolve_run(config)["data"]["name"] in IMAGE_NAMES
RUNS = experiment.runs(config)  # run -> (stage, [override, ...]): the stages, then the ablation runs
# Params of the rules, so that Snakemake redoes what a config edit changes: a run whose settings changed (and
# what reads it), the test points (and every cell) when the data changed.
RUN_FINGERPRINTS = {run: run_fingerprint(config, run) for run in RUNS}
# run -> its name in tables and figures (its stage's label, else its objective's): the gather rules' params.labels
LABELS = run_labels(config)
DATA_FINGERPRINT = experiment.fingerprint(resolve_run(config)["data"])
REFERENCE = experiment.reference_stage(config)  # the teacher of the NLL reference solve
F2D2_RUNS = experiment.f2d2_runs(config)  # evaluated with their divergence head
F2D2_STAGES = [s for s in STAGES if s in F2D2_RUNS]
OWN_FLOW_STAGES = experiment.own_flow_stages(config)  # also compared with their own flow's dopri5 solve
ABLATION_TABLES = experiment.ablation_tables(config)  # ablation name -> table number
FID = EVAL["fid"]
BUNDLE = EVAL["bundle"]  # one evaluation job per run (rule eval_<run>), else one per cell
DENSITY_RUNS = list((config.get("figures") or {}).get("density", {}).get("runs", []))


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


def is_f2d2(run):
    return run in F2D2_RUNS


def checkpoint(run):
    """A run's checkpoint. Rules depend on its train.json (written when training has finished) instead,
    so that Snakemake never deletes a half-trained checkpoint that a rerun resumes from."""
    return f"{OUT}/train/{run}/checkpoint.pt"


def trained(run):
    return f"{OUT}/train/{run}/train.json"


def run_inputs(run):
    """What a run reads: its warm start and its teacher (stage names in the config)."""
    return [trained(dep) for dep in experiment.dependencies(config, run)]


def submit(log_dir, job_name):
    """`f2d2 submit --log-dir ... --job-name ...`, a rule's params.submit. Its shell command follows it with
    {resources.f2d2_submit} (``submit_resources``) and then `-- <command>`."""
    return shlex.join(["f2d2", "submit", "--log-dir", log_dir, "--job-name", job_name])


def submit_resources(kind):
    """The rule resources of a ``kind`` (train or eval) job: ``f2d2_submit``, the cluster and the config's
    resources as `f2d2 submit` flags. A resource, not a param: Snakemake reruns a job whose params changed,
    and asking for more time or another partition changes no result."""
    res = config["resources"][kind]
    parts = ["--cluster", CLUSTER, "--gpus", str(res["gpus"]), "--cpus", str(res["cpus"]),
             "--mem-gb", str(res["mem_gb"]), "--time-min", str(res["time_min"])]
    for key in ("tasks_per_node", "signal_delay_s"):
        if key in res:
            parts += ["--" + key.replace("_", "-"), str(res[key])]
    partition = res.get("partition") or os.environ.get("F2D2_PARTITION")
    if partition:
        parts += ["--partition", partition]
    return {"f2d2_submit": shlex.join(parts)}


def device(kind):
    return "cuda" if config["resources"][kind]["gpus"] > 0 else "cpu"


def nll_cell(run, k):
    return f"{OUT}/eval/nll/{run}/K{k}.json"


def sample_cell(run, k, guided=False):
    return f"{OUT}/eval/samples/{run}/K{k}{'_guided' if guided else ''}.json"


def density_cell(run, k):
    return f"{OUT}/eval/density/{run}/K{k}.csv"


def cell_log_dir(kind, run, cell):
    """Where an unbundled cell's job logs (kind: nll, samples or density; cell: e.g. K2 or K2_guided)."""
    return f"{OUT}/eval/{kind}/{run}/logs/{cell}"


def bundle_rule(run):
    """The name of a run's evaluation rule: eval_<run>, with any character a rule name cannot take as _."""
    return "eval_" + re.sub(r"\W", "_", run)


def bundle_log_dir(run):
    return f"{OUT}/eval/bundle/{run}/logs"


def bundle_record(run):
    """`f2d2 eval --record`: each cell's seconds, beside the bundle's job.json."""
    return f"{bundle_log_dir(run)}/cells.json"


def job_log_dirs():
    """The log folder (job.json) of every submitit job of the experiment."""
    dirs = [f"{OUT}/train/{run}/logs" for run in RUNS]
    dirs += [f"{OUT}/eval/nll/{run}/logs/reference" for run in [REFERENCE, *OWN_FLOW_STAGES]]
    if IMAGES:
        dirs.append(f"{OUT}/eval/logs/fid_reference")
    if BUNDLE:
        return dirs + [bundle_log_dir(run) for run in RUNS]
    for run in RUNS:
        dirs += [cell_log_dir("nll", run, f"K{k}") for k in STEPS]
        dirs += [cell_log_dir("samples", run, f"K{k}") for k in STEPS]
        if run in F2D2_STAGES:
            dirs += [cell_log_dir("samples", run, f"K{k}_guided") for k in STEPS]
        if run in DENSITY_RUNS:
            dirs.append(cell_log_dir("density", run, f"K{config['figures']['density']['steps']}"))
    return dirs


def compute_share_files():
    return [f"{OUT}/tables/compute_share.json", f"{OUT}/tables/compute_share.txt"]


def main_table_cells():
    nll = [nll_cell(r, k) for r in STAGES for k in STEPS]
    samples = [sample_cell(r, k) for r in STAGES for k in STEPS]
    return nll, samples


def fid_reference():
    return f"{OUT}/eval/fid_reference.npz"


def all_targets():
    tables = [f"{OUT}/tables/table{n}.csv" for n in (1, 3, 4, 7, *ABLATION_TABLES.values())]
    tables += [f"{OUT}/tables/{name}.html" for name in ("table1", "table7", "headline")]
    figures = [f"{OUT}/figures/figure2.png", f"{OUT}/figures/training_curves.png"]
    if "density" in (config.get("figures") or {}):
        figures.append(f"{OUT}/figures/figure3.png")
    return tables + figures + compute_share_files()
