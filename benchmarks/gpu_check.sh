#!/usr/bin/env bash
# The prepared GPU check: one command, ~8 minutes on one GPU; results under OUT_DIR (default $OUT, else
# gpu_check_out), ready to be committed to benchmarks/. Extra arguments go to gpu_check.py
# (e.g. --minutes 8, --only am dgnam, --dry-run). See benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
shift || true
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
nvidia-smi -L || echo "nvidia-smi: not found"
exec "$PY" benchmarks/gpu_check.py --out "$out" "$@"
