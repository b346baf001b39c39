#!/usr/bin/env bash
# Runs the test suite from nothing: creates .venv and installs everything first (scripts/setup.sh).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k likelihood`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${F2D2_VENV:-.venv}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$VENV/bin/python" -m pytest "$@"
