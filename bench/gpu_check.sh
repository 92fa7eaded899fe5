#!/usr/bin/env bash
# One-command device check: latency per backend and train-bc steps/s, CPU and GPU side by side.
# Runs with the repo's .venv when there is one, else the machine's python3 (a bare GPU box with
# PyTorch needs nothing else). Arguments go to bench/gpu_check.py (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONUNBUFFERED=1
exec "$PY" bench/gpu_check.py "$@"
