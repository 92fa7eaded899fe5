#!/usr/bin/env bash
# Reproduces the shipped checkpoints models/vla_bc_v3, v4 and v5 (the default) as they were made:
#  1. 1,200 scripted-expert demonstrations (seeds 100000-101199). DART: the expert executes
#     sigma = 0.02 rad noisy actions, the frames record its clean intention as rl.action_mean,
#     which behaviour cloning imitates. Frames also carry observation.environment_state (object
#     and grasp-point positions), used only as auxiliary training targets.
#  2. stage 1 = vla_bc_v2: 6,000 steps from scratch, behaviour cloning only (--aux-weight 0).
#  3. stage 2: 6,000 more steps from stage 1's weights with the auxiliary grounding loss (an
#     attention read-out of the instructed cube's and the goal's positions); 41% success.
#  4. stage 3 = vla_bc_v3: 3,000 more steps from stage 2 (new cosine schedule, LR 3e-4); 68%.
#  5. evaluation on 100 held-out seeds, copy into models/.
#  6. v4 = v3 + the language grounding head (train-grounding; the action weights unchanged).
#  7. v5 (the default since 2026-12-04) = v4 fine-tuned on 1,200 demonstrations, 800 of them new
#     (seeds 101200-101999) and 400 re-collected (seeds 100000-100399, identical to v3's), 4,000 steps,
#     LR 3e-4, aux weight 0.5; the grounding head is carried over by --init. ~20 min collection +
#     ~33 min training (3.5 steps/s on 2 cores when nothing else runs).
# Stages 1-5: ~27 min collection + ~45 + ~50 + ~40 min training + ~3 min evaluation on 2 CPU cores.
# (Collection runs the graph's episode loop without ROS, in 2 processes: `collect --direct`;
# the same command without --direct collects through the ROS graph, ~25 episodes/min.)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs}
VRR=.venv/bin/vla-rl-ros
mkdir -p "$WORK"
$VRR collect --direct --workers 2 --episodes 1200 --seed 100000 --expert-noise 0.02 --out "$WORK/demos_env"
$VRR train-bc --data "$WORK/demos_env" --out "$WORK/bc2" --steps 6000 --lr 5e-4 --seed 0 --version 1 --aux-weight 0
$VRR train-bc --data "$WORK/demos_env" --out "$WORK/bc3" --init "$WORK/bc2/checkpoint" --steps 6000 --lr 5e-4 \
    --seed 0 --version 1 --aux-weight 0.5
$VRR train-bc --data "$WORK/demos_env" --out "$WORK/bc4" --init "$WORK/bc3/checkpoint" --steps 3000 --lr 3e-4 \
    --seed 1 --version 1 --aux-weight 0.5
$VRR evaluate --checkpoint "$WORK/bc4/checkpoint" --episodes 100 --seed 1000 --direct --workers 2 --json "$WORK/eval_bc4.json"
rm -rf models/vla_bc_v3
cp -r "$WORK/bc4/checkpoint" models/vla_bc_v3
rm -f models/vla_bc_v3/train_state.*
cp "$WORK/bc4/loss.png" models/vla_bc_v3_loss.png  # (the committed PNG plots stages 2 and 3 together)

$VRR train-grounding --checkpoint models/vla_bc_v3 --out "$WORK/v4"
rm -rf models/vla_bc_v4 && cp -r "$WORK/v4" models/vla_bc_v4
$VRR collect --direct --workers 2 --episodes 400 --seed 100000 --expert-noise 0.02 --out "$WORK/demos400"
$VRR collect --direct --workers 2 --episodes 800 --seed 101200 --expert-noise 0.02 --out "$WORK/demos800"
$VRR train-bc --data "$WORK/demos400" "$WORK/demos800" --init models/vla_bc_v4 --out "$WORK/bc5b" --steps 4000 \
    --lr 3e-4 --seed 3 --version 1 --aux-weight 0.5
$VRR compare models/vla_bc_v4 "$WORK/bc5b/checkpoint" --per-family 167 --workers 2 --json "$WORK/cmp_bank_v5.json"
rm -rf models/vla_bc_v5
cp -r "$WORK/bc5b/checkpoint" models/vla_bc_v5
rm -f models/vla_bc_v5/train_state.*
cp "$WORK/bc5b/loss.png" models/vla_bc_v5_loss.png
