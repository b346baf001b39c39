# F2D2 pipeline: teacher -> Shortcut / Shortcut-Distill / MeanFlow -> F2D2 finetuning -> evaluation
# cells -> tables, figures, report. Rules only wire files together and call the f2d2 CLI; training
# and evaluation jobs run through submitit (`f2d2 submit`): on SLURM with the slurm profile, as
# local processes with the local profile.
#
#   snakemake --profile workflow/profiles/local                       # everything
#   snakemake --profile workflow/profiles/local results/tables/table1.csv
#   snakemake --profile workflow/profiles/local --configfile config/checkerboard.yaml

import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from f2d2.config import ConfigError, validate_experiment

min_version("8.0")


# The default config, unless --configfile names another (which then replaces it instead of being
# merged over it, so that no stage or ablation of the default leaks into another experiment).
if not workflow.configfiles:

    configfile: "config/config.yaml"


def _config_path(path):
    """The config's path as the rules pass it (a param of the table rules): relative to the working
    directory when it lies inside it, so that `--configfile config/config.yaml` and the default name the
    same file the same way, and a rerun with either does nothing."""
    path = os.path.abspath(path)
    inside = os.path.commonpath([path, os.getcwd()]) == os.getcwd()
    return os.path.relpath(path) if inside else path


CONFIG_FILE = _config_path(workflow.configfiles[-1] if workflow.configfiles else "config/config.yaml")


# Each key against the schema (src/f2d2/config/schema.yaml), one line per bad key, before common.smk
# reads any; common.smk adds the rules that span several keys (f2d2.preflight.checks). Not
# snakemake.utils.validate: its message prints the whole schema.
try:
    validate_experiment(config)
except ConfigError as e:
    raise WorkflowError(f"config {CONFIG_FILE}: {e}")


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/gather.smk"


report: "workflow/report/workflow.rst"


onstart:
    check_data()


rule all:
    input:
        all_targets(),
    default_target: True
