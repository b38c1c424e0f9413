#!/usr/bin/env bash
# One GPU check of the project (at most 8 min on one CUDA GPU): the CUDA
# tests, GPU training runs of the shapes demos, tools/test.py --amp and the
# two benchmarks on CUDA. Writes summary.json and summary.md to the output
# folder and exits non-zero on any failure. Steps: tools/gpu_check.py.
#
#   bash tools/gpu_check.sh [--out-dir DIR] [--steps NAME ...] [--dry-run]
#
# PYTHON: the interpreter with the project's stack (default: .venv/bin/python
# of this repository if there is one, else python3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" "$ROOT/tools/gpu_check.py" "$@"
