"""``vla-rl-ros train-wm``: train the default world model (``core/wm``) on logged episodes.

Encodes every logged frame with the checkpoint's frozen backbone, fits the latent dynamics
ensemble and its heads, and prints its held-out prediction quality (latent error after 1, 2 and
4 chunks against copying the last latent, success / contact AUC, disagreement vs error). Every
option is a field of ``core/wm/config.WMConfig``."""

from __future__ import annotations

from vla_rl_ros.cli.common import build_or_die, check_writable_dir, die, require_datasets
from vla_rl_ros.core.config import add_fields
from vla_rl_ros.core.paths import checkpoint_or_default
from vla_rl_ros.core.wm.config import WMConfig

HELP = "train the latent world model on logged episodes (held-out prediction figures, wm.png)"


def add_arguments(p) -> None:
    add_fields(p, WMConfig, required=("data",))


def main(args) -> int:
    from vla_rl_ros.core.policy.checkpoint import CheckpointError

    cfg = build_or_die(WMConfig, args, checkpoint=checkpoint_or_default(args.checkpoint))
    require_datasets(cfg.data)
    check_writable_dir(cfg.out)
    from vla_rl_ros.core.sim.task_features import episode_contact, episode_privileged_features
    from vla_rl_ros.core.wm.train import train_world_model

    try:
        res = train_world_model(cfg, contact=episode_contact, privileged=episode_privileged_features)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        die(str(e))
    print(f"world model: {res['model']}  ({res['train_episodes']} training / {res['held_out_episodes']} held-out "
          f"episodes, {res['frames']} frames{', privileged task features in the latent' if res['privileged'] else ''}; encode {res['encode_seconds']:.0f} s, train {res['train_seconds']:.0f} s)")
    if res["summary"]:
        print(res["summary"])
        print(f"plot: {cfg.out}/wm.png")
    return 0
