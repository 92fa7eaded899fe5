#!/usr/bin/env bash
# Reproduces models/vla_bc_v2 as it was made: 1,200 scripted-expert demonstrations (DART: the
# expert executes σ = 0.02 rad noisy actions, the frames record its clean intention as
# rl.action_mean, which behaviour cloning imitates) -> behaviour cloning (6,000 steps, 16
# spatial-softmax keypoint tokens) -> evaluation on 100 held-out seeds -> copy into models/.
# ~33 min collection + ~45 min training + ~5 min evaluation on 2 CPU cores.
# (Collection runs the graph's episode loop without ROS, in 2 processes: `collect --direct`;
# the same command without --direct collects through the ROS graph, ~25 episodes/min.)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs}
VRR=.venv/bin/vla-rl-ros
mkdir -p "$WORK"
$VRR collect --direct --workers 2 --episodes 1200 --seed 100000 --noise 0.02 --out "$WORK/demos_dart"
$VRR train-bc --data "$WORK/demos_dart" --out "$WORK/bc2" --steps 6000 --lr 5e-4 --seed 0 --version 1
$VRR evaluate --policy "$WORK/bc2/checkpoint" --episodes 100 --seed 1000 --direct --workers 2 --json "$WORK/eval_bc2.json"
rm -rf models/vla_bc_v2
cp -r "$WORK/bc2/checkpoint" models/vla_bc_v2
rm -f models/vla_bc_v2/train_state.*
cp "$WORK/bc2/loss.png" models/vla_bc_v2_loss.png
