"""``vla-rl-ros train-grounding``: teach a checkpoint to understand free-form instructions.

Trains the language grounding head (``core/policy/grounding.py``) on generated phrasings of the
checkpoint's skills, calibrates its refusal threshold on held-out phrasings, and writes a new
checkpoint: the same policy weights and ONNX graph, one version up, with the head.
"""

from __future__ import annotations

import json
from pathlib import Path

from vla_rl_ros.cli.common import build_or_die, check_writable_dir, die
from vla_rl_ros.core.config import add_fields
from vla_rl_ros.core.policy.grounding_config import GroundingConfig

HELP = "train the language grounding head of a checkpoint (free-form instructions, refusals)"


def add_arguments(p) -> None:
    add_fields(p, GroundingConfig)


def main(args) -> int:
    cfg = build_or_die(GroundingConfig, args)
    if not (Path(cfg.checkpoint) / "config.json").is_file():
        die(f"--checkpoint {cfg.checkpoint!r}: no checkpoint there (config.json missing)")
    if Path(cfg.out).resolve() == Path(cfg.checkpoint).resolve():
        die("--out must differ from --checkpoint (the base checkpoint is kept for comparison)")
    check_writable_dir(str(Path(cfg.out).parent))
    from vla_rl_ros.core.policy.grounding import ship

    result = ship(cfg)  # the resolved configuration is stored in the checkpoint's meta
    show = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k != "config"}
    print(json.dumps(show, indent=2))
    return 0
