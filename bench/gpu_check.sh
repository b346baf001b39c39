#!/usr/bin/env bash
# The GPU check of the image path, prepared to run ONCE on a GPU machine (one H100/H200); on one H200 its parts
# overran their limits (docs/benchmarks.md: the full calibration alone needs ~8-9 minutes there):
#   1. bench/images.py --size cifar: training images/s of every stage kind in float32 and bfloat16 (compile for
#      flow matching), 1/2/4/8-NFE sampling ms/image, K = 1 BPD time of 10,000 patches vs the reference; at most
#      200 s.
#   2. bench/images.py --calibrate: teacher -> Shortcut-Distill -> Shortcut-Distill-F2D2 on 32x32 patches
#      (config/patches-gpu.yaml), K = 1 BPD vs the teacher's reference on the 255 test patches; at most 300 s.
#   3. the speed-accuracy frontier at 32x32 (f2d2 frontier): the calibrated Shortcut-Distill-F2D2 at K = 1, 2, 4, 8
#      against the calibrated teacher's Euler, midpoint, RK4 and dopri5 solves (f2d2's and flow_matching's) on the
#      test patches, scored against the mean of 16 Hutchinson dopri5 solves; at most 200 s.
# Each part has its own time limit (seconds; LIMIT_BENCH, LIMIT_CAL, LIMIT_FRONTIER override them, e.g. to fit a
# lease), so one overrunning part still leaves the others' output. Everything is
# printed; JSON and logs go to $OUT (the device tool's folder) or results/gpu_check.
#   bash bench/gpu_check.sh            # on the GPU machine, with a python that imports f2d2 (PYTHON=...)
#   bash bench/gpu_check.sh --tiny     # the same path on a CPU at CI size (~3 minutes on 2 cores)
# Targets (the issue): teacher training >= 1500 images/s, MeanFlow with its JVP >= 600 images/s, 1-NFE sampling
# <= 0.05 ms/image, K = 1 BPD of 10,000 images <= 5 s, calibrated K = 1 BPD within 0.1 bits/dim of the reference.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-results/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${1:-}" == "--tiny" ]]; then
    DEVICE=cpu; BENCH=(--size cpu --compile-kinds flow_matching); CAL=(--tiny); LIMITS=(400 300 300)
    FRONTIER=(--n 16 --euler 1 4 --midpoint 2 --rk4 1 --tols 1e-2 --ref-probes 2)
else
    DEVICE=cuda; BENCH=(--size cifar); CAL=(); LIMITS=(200 300 200)
    FRONTIER=(--n 255 --euler 1 2 4 8 16 32 --midpoint 1 2 4 8 16 --rk4 1 2 4 8 --tols 1e-2 1e-3 1e-4 --ref-probes 16)
fi
LIMIT_BENCH=${LIMIT_BENCH:-${LIMITS[0]}}; LIMIT_CAL=${LIMIT_CAL:-${LIMITS[1]}}; LIMIT_FRONTIER=${LIMIT_FRONTIER:-${LIMITS[2]}}

echo "== gpu_check on $(hostname) at $(date -u +%FT%TZ), device $DEVICE, output $OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import sys, torch, f2d2, skimage, torchdiffeq; print('python', sys.version.split()[0], 'torch', \
torch.__version__, 'cuda', torch.cuda.is_available(), torch.version.cuda)" || { echo "python cannot import f2d2 and its \
dependencies (torch, scikit-image, torchdiffeq): set PYTHON or install them"; exit 2; }

status=0
start=$SECONDS
timeout "$LIMIT_BENCH" "$PY" bench/images.py "${BENCH[@]}" --device "$DEVICE" --out "$OUT/images.json" 2>&1 \
    | grep --line-buffered -v -e "FutureWarning" -e "warnings.warn" | tee "$OUT/images.log"
rc=${PIPESTATUS[0]}; echo "== bench: exit $rc after $((SECONDS - start)) s"; [[ $rc == 0 ]] || status=1

start=$SECONDS
timeout "$LIMIT_CAL" "$PY" bench/images.py --calibrate "${CAL[@]}" --device "$DEVICE" --out "$OUT/calibrate" 2>&1 \
    | grep --line-buffered -v -e "FutureWarning" -e "warnings.warn" | tee "$OUT/calibrate.log"
rc=${PIPESTATUS[0]}; echo "== calibrate: exit $rc after $((SECONDS - start)) s"; [[ $rc == 0 ]] || status=1
start=$SECONDS
CAL_DIR="$OUT/calibrate"
timeout "$LIMIT_FRONTIER" bash -c '"$0" -m f2d2.cli.main data --config "$1/teacher/config.yaml" --n 255 --seed 12345 \
    --out "$1/test_points.npy" && "$0" -m f2d2.cli.main frontier --teacher "$1/teacher/checkpoint.pt" \
    --run "shortcut_distill_f2d2=$1/shortcut_distill_f2d2/checkpoint.pt" --points "$1/test_points.npy" \
    --divs hutchinson --ref-tol 1e-4 --speedup 30 --device "$2" --out "$3" "${@:4}"' \
    "$PY" "$CAL_DIR" "$DEVICE" "$OUT/frontier" "${FRONTIER[@]}" 2>&1 | tee "$OUT/frontier.log"
rc=${PIPESTATUS[0]}; echo "== frontier: exit $rc after $((SECONDS - start)) s"; [[ $rc == 0 ]] || status=1
for stage in teacher shortcut_distill shortcut_distill_f2d2; do  # the training curves, small; not the checkpoints
    [[ -f "$OUT/calibrate/$stage/metrics.jsonl" ]] && cp "$OUT/calibrate/$stage/metrics.jsonl" "$OUT/$stage.metrics.jsonl"
done
rm -f "$OUT"/calibrate/*/checkpoint*.pt
exit $status
