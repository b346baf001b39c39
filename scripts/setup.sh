#!/usr/bin/env bash
# Creates .venv (or $F2D2_VENV) from nothing and installs f2d2 with its test extras.
# Idempotent: a second call with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${F2D2_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.f2d2-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # torch 2.14.1 with torchvision 0.29.1 is a CUDA build from PyPI: ~3 GB of downloads, 5.5 GB
  # installed (the CPU wheel of torch has no importable torchvision beside it, and clean-fid needs
  # torchvision). No pip cache and a temporary folder beside the venv keep the peak near 6 GB on
  # the venv's own disk, instead of another 3 GB of cached wheels and a possibly small /tmp.
  need_kb=$((13 * 512 * 1024))  # 6.5 GB: 5.75 GB peak for torch + torchvision, ~0.5 GB for the rest
  free_kb=$(df -Pk "$VENV" | awk 'NR == 2 {print $4}')
  if [ "$free_kb" -lt "$need_kb" ]; then
    echo "[setup] error: $VENV needs about 6.5 GB free for torch, torchvision and the rest;" \
      "its disk has $((free_kb / 1024)) MB free ($(df -Ph "$VENV" | awk 'NR == 2 {print $6}'))." >&2
    exit 1
  fi
  echo "[setup] installing dependencies into $VENV (first time: a few minutes," \
    "$((free_kb / 1024 / 1024)) GB free)"
  export PIP_NO_CACHE_DIR=1 TMPDIR="$VENV/.tmp"
  mkdir -p "$TMPDIR"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch and torchvision must come as a matching pair.
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  rm -rf "$TMPDIR" "$VENV"/.f2d2-*
  touch "$stamp"
fi
