#!/usr/bin/env bash
# The main job, from nothing: set-up, then the whole Snakemake pipeline on an experiment config
# (CONFIG, default config/config.yaml: the 2D checkerboard, small) with the local profile, then
# the HTML report, and how much of the jobs' time was computing (OUT/tables/compute_share.txt).
# Extra arguments go to snakemake, e.g. `bash scripts/run.sh results/tables/table1.csv`;
# another experiment: `CONFIG=config/checkerboard.yaml bash scripts/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CONFIG="${CONFIG:-config/config.yaml}"
VENV="${F2D2_VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
out=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['outdir'])" "$CONFIG")
snakemake --profile workflow/profiles/local --configfile "$CONFIG" "$@"
snakemake --profile workflow/profiles/local --configfile "$CONFIG" "$@" --report "$out/report.html"
echo "done: tables in $out/tables, figures in $out/figures, report $out/report.html"
if [ -f "$out/tables/compute_share.txt" ]; then cat "$out/tables/compute_share.txt"; fi
