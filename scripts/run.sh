#!/usr/bin/env bash
# The main job on an experiment config (default: config/config.yaml, the 2D checkerboard), from nothing:
# set-up, the flow-matching teacher, then the per-point NLL of held-out points with the reference
# (dopri5) solver and with K = 1, 2, 4, 8 Euler steps, each compared with the reference.
# Outputs land in results/<config name>/. Re-running resumes or skips finished training.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-config/config.yaml}"
N_POINTS="${N_POINTS:-10000}"
TEST_SEED="${TEST_SEED:-12345}"
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
F2D2="${F2D2_VENV:-.venv}/bin/f2d2"
OUT="results/$(basename "$CONFIG" .yaml)"

"$F2D2" train --config "$CONFIG" --stage teacher --workdir "$OUT/teacher"
"$F2D2" data --config "$CONFIG" --n "$N_POINTS" --seed "$TEST_SEED" --out "$OUT/test_points.npy"
"$F2D2" nll --checkpoint "$OUT/teacher/checkpoint.pt" --points "$OUT/test_points.npy" --reference \
  --out "$OUT/nll/teacher_reference.csv" --summary "$OUT/nll/teacher_reference.json"
for K in 1 2 4 8; do
  "$F2D2" nll --checkpoint "$OUT/teacher/checkpoint.pt" --points "$OUT/test_points.npy" --steps "$K" --div exact \
    --compare "$OUT/nll/teacher_reference.csv" --out "$OUT/nll/teacher_euler_K$K.csv" \
    --summary "$OUT/nll/teacher_euler_K$K.json"
done
"$F2D2" sample --checkpoint "$OUT/teacher/checkpoint.pt" --n "$N_POINTS" --steps 100 --out "$OUT/samples_teacher_K100.npy"
echo "done: results in $OUT/"
