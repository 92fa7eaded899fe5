#!/usr/bin/env bash
# Reproduces models/vla_bc_v1: expert demonstrations through the ROS graph -> behaviour cloning
# -> evaluation -> copy into models/. Takes ~40 minutes on 2 CPU cores.
#   EPISODES=300 STEPS=4000 bash scripts/train_shipped_policy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES=${EPISODES:-300}
STEPS=${STEPS:-4000}
WORK=${WORK:-runs/shipped}
VRR=.venv/bin/vla-rl-ros
mkdir -p "$WORK"
# two collectors in parallel on separate seeds and ROS domains (one dataset each)
half=$((EPISODES / 2))
$VRR collect --episodes "$half" --out "$WORK/demos_a" --seed 0 --noise 0.02 --speed 3 --domain-id 61 &
$VRR collect --episodes "$((EPISODES - half))" --out "$WORK/demos_b" --seed 100000 --noise 0.02 --speed 3 --domain-id 62
wait
$VRR train-bc --data "$WORK/demos_a" "$WORK/demos_b" --out "$WORK/bc" --steps "$STEPS" --seed 0
$VRR evaluate --policy "$WORK/bc/checkpoint" --episodes 100 --seed 1000 --direct --json "$WORK/eval_direct.json"
rm -rf models/vla_bc_v1
cp -r "$WORK/bc/checkpoint" models/vla_bc_v1
rm -f models/vla_bc_v1/train_state.*
cp "$WORK/bc/loss.png" models/vla_bc_v1_loss.png
