# F2D2 pipeline: teacher -> Shortcut / Shortcut-Distill / MeanFlow -> F2D2 finetuning -> evaluation
# cells -> tables, figures, report. Rules only wire files together and call the f2d2 CLI; training
# and evaluation jobs run through submitit (`f2d2 submit`): on SLURM with the slurm profile, as
# local processes with the local profile.
#
#   snakemake --profile workflow/profiles/local                       # everything
#   snakemake --profile workflow/profiles/local results/tables/table1.csv
#   snakemake --profile workflow/profiles/local --configfile config/checkerboard.yaml

from snakemake.utils import min_version

min_version("8.0")


# The default config, unless --configfile names another (which then replaces it instead of being
# merged over it, so that no stage or ablation of the default leaks into another experiment).
if not workflow.configfiles:

    configfile: "config/config.yaml"


# The config is validated in common.smk by f2d2.config.checks: each key against the schema
# (src/f2d2/config/schema.yaml) and the rules spanning several keys, one line per bad key. Not
# snakemake.utils.validate, whose message prints the whole schema.
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
