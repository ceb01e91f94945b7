#!/usr/bin/env bash
# One prepared check for a lent GPU (<= 8 minutes on one GPU): see tools/gpu_check.py.
#   bash tools/gpu_check.sh OUT_DIR            # on the GPU machine
#   bash tools/gpu_check.sh --dry-run OUT_DIR  # the same code paths on the CPU, tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
dry=()
if [ "${1:-}" = --dry-run ]; then dry=(--dry-run); shift; fi
[ $# -eq 1 ] || { echo "usage: bash tools/gpu_check.sh [--dry-run] OUT_DIR" >&2; exit 2; }
exec "${PYTHON:-python3}" tools/gpu_check.py "$1" "${dry[@]}"
