#!/usr/bin/env bash
# Runs the test suite from nothing: creates .venv and installs everything first (scripts/setup.sh),
# brings up a single-node SLURM cluster for the tests marked `slurm` (scripts/slurm.sh: installs
# Debian's slurm-wlm, munge, slurmdbd and mariadb-server when missing) and stops its daemons at the
# end, also when tests fail. Runs ruff (lint, format check) before pytest. Extra arguments go to
# pytest, e.g. `bash scripts/test.sh -k likelihood`.
# Without SLURM (no root, no apt): `F2D2_SLURM=0 bash scripts/test.sh` runs everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${F2D2_VENV:-.venv}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
marker=()
if [ "${F2D2_SLURM:-1}" = 0 ]; then
  marker=(-m "not slurm")
else
  trap 'bash scripts/slurm.sh down' EXIT
  bash scripts/slurm.sh up
  eval "$(bash scripts/slurm.sh env)"
fi
# Lint and format first (seconds): a style slip fails the run before the slow tests start.
"$VENV/bin/ruff" check src tests bench workflow/scripts
"$VENV/bin/ruff" format --check src tests bench workflow/scripts
"$VENV/bin/python" -m pytest "${marker[@]}" "$@"
