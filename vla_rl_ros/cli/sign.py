"""``vla-rl-ros sign``: sign checkpoints for a policy node that requires signed weights."""

from __future__ import annotations

from dataclasses import dataclass

from vla_rl_ros.cli.common import build_or_die, die
from vla_rl_ros.core.config import add_fields, opt, require

HELP = "sign checkpoints (HMAC-SHA256 of their manifest) for a policy_node started with weights_key_file"


@dataclass(frozen=True)
class SignConfig:
    checkpoints: tuple[str, ...] = opt((), "checkpoint directories to sign", positional=True)
    key_file: str = opt("", "file holding the key (at least 16 bytes; the policy node's weights_key_file)",
                        required=True)

    def validate(self) -> None:
        require(bool(self.checkpoints), "give at least one checkpoint directory")


def add_arguments(p) -> None:
    add_fields(p, SignConfig)


def main(args) -> int:
    from vla_rl_ros.core.policy.checkpoint import CheckpointError, verify_files
    from vla_rl_ros.core.policy.trust import read_key, sign_checkpoint

    cfg = build_or_die(SignConfig, args)
    try:
        key = read_key(cfg.key_file)
    except ValueError as e:
        die(str(e))
    for ckpt in cfg.checkpoints:
        try:
            verify_files(ckpt)  # never sign a corrupt or half-written checkpoint
            print(f"signed {ckpt}: {sign_checkpoint(ckpt, key)}")
        except (CheckpointError, OSError) as e:
            die(f"not signed: {e}")
    return 0
