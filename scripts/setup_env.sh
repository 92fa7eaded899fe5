#!/usr/bin/env bash
# Create .venv with pinned dependencies (CPU torch 2.14.1 + torchvision 0.29.1, rclpy wheels,
# lerobot 0.4.4 without its over-strict pins) and install this package in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  # EGL (PyBullet's fast renderer) and OpenCV's runtime libraries; harmless if already there.
  need=""
  for pkg in libegl1 libegl-mesa0 libgl1 libglib2.0-0; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null || \
      echo "warning: could not apt-get install$need (EGL rendering may fall back to TINY)"
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -U pip wheel
.venv/bin/pip install -q -c requirements/constraints.txt -r requirements/base.txt -r requirements/test.txt
.venv/bin/pip install -q -c requirements/constraints.txt -r requirements/extras.txt
.venv/bin/pip install -q --no-deps lerobot==0.4.4
.venv/bin/pip install -q --no-deps -e .
.venv/bin/python -c "import rclpy, torch, pybullet, lerobot; print('environment ready: torch', torch.__version__)"
