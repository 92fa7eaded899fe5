"""``vla-rl-ros train-rl``: offline likelihood-ratio RL of the action head on logged episodes.
Every option is a field of ``core/rl/config.RLConfig`` (plus ``--announce``)."""

from __future__ import annotations

from dataclasses import dataclass

from vla_rl_ros.cli.common import RosOptions, build_or_die, check_writable_dir, die, require_datasets
from vla_rl_ros.core.config import add_fields, build, opt
from vla_rl_ros.core.paths import checkpoint_or_default
from vla_rl_ros.core.rl.config import RLConfig

HELP = "offline likelihood-ratio RL of the action head on logged episodes"


@dataclass(frozen=True)
class TrainRLOptions(RosOptions):
    announce: bool = opt(False, "announce the new weights on /vla/policy/weights (hot swap into a running policy_node)")


def add_arguments(p) -> None:
    add_fields(p, RLConfig, required=("data",))
    add_fields(p, TrainRLOptions)


def main(args) -> int:
    from vla_rl_ros.core.policy.checkpoint import CheckpointError
    from vla_rl_ros.core.rl.trainer import train_rl

    rl = build_or_die(RLConfig, args, init=checkpoint_or_default(args.init))
    opts = build(TrainRLOptions, args)
    require_datasets(rl.data)
    check_writable_dir(rl.out)
    from vla_rl_ros.core.sim.task_features import episode_privileged_features

    try:
        res = train_rl(rl, privileged=episode_privileged_features)  # writes the resolved configuration next to the checkpoint (config.json)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        die(str(e))
    if res is None:  # a torchrun rank other than 0: rank 0 wrote the checkpoint and reports
        return 0
    from vla_rl_ros.core.improve import rl_summary

    print(rl_summary(res))
    if opts.announce:
        from vla_rl_ros.rosio import announce_weights

        announce_weights(res["checkpoint"], opts.domain_id)
    return 0
