#!/usr/bin/env bash
# Reproduces models/vla_bc_v1 exactly as it was made: 360 expert demonstrations through the ROS
# graph -> behaviour cloning -> evaluation -> copy into models/. ~45 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/shipped}
VRR=.venv/bin/vla-rl-ros
mkdir -p "$WORK"
$VRR collect --episodes 360 --out "$WORK/demos" --seed 0 --noise 0.02 --speed 2.5 --domain-id 61
$VRR train-bc --data "$WORK/demos" --out "$WORK/bc" --steps 3500 --lr 5e-4 --seed 0
$VRR evaluate --policy "$WORK/bc/checkpoint" --episodes 60 --seed 1000 --direct --threads 1 --json "$WORK/eval_direct.json"
rm -rf models/vla_bc_v1
cp -r "$WORK/bc/checkpoint" models/vla_bc_v1
rm -f models/vla_bc_v1/train_state.*
cp "$WORK/bc/loss.png" models/vla_bc_v1_loss.png
