"""``vla-rl-ros improve``: rounds of collect (with exploration) -> train-rl -> hot swap -> evaluate.
The loop is ``core/improve.py`` (ROS-free); the graph collector is ``rosio.GraphCollector``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from vla_rl_ros.cli.common import build_or_die, check_writable_dir, die, require_ray
from vla_rl_ros.core.config import add_fields
from vla_rl_ros.core.improve import RL_FIELDS_SET_BY_IMPROVE, ImproveConfig, check_world_model_options
from vla_rl_ros.core.paths import checkpoint_or_default
from vla_rl_ros.core.rl.config import RLConfig

HELP = "rounds of collect (with exploration) -> train-rl -> hot swap -> evaluate"


def add_arguments(p) -> None:
    add_fields(p, ImproveConfig)
    add_fields(p.add_argument_group("RL update (train-rl options)"), RLConfig, exclude=RL_FIELDS_SET_BY_IMPROVE)


def main(args) -> int:
    from vla_rl_ros.core.improve import DirectCollector, run_rounds
    from vla_rl_ros.core.policy.checkpoint import CheckpointError, read_config

    cfg = build_or_die(ImproveConfig, args)
    require_ray(cfg.ray)
    ckpt = str(Path(checkpoint_or_default(cfg.init)).resolve())
    out = Path(cfg.out).expanduser().resolve()
    placeholder = str(out / "round_1" / "wm" / "model") if cfg.world_model else ""  # refitted every round
    rl = build_or_die(RLConfig, args, data=(str(out / "data"),), init=ckpt, out=str(out / "round_1"),
                      world_model=placeholder)
    try:
        check_world_model_options(cfg, rl)
    except ValueError as e:
        die(str(e))
    try:
        pcfg = read_config(ckpt)
    except CheckpointError as e:
        die(str(e))
    out = check_writable_dir(cfg.out)
    data = out / "data"
    if data.exists():
        die(f"{data} exists: use a fresh --out for each improve run")
    version = int(pcfg.get("version", 0))
    t_start = time.monotonic()
    print(f"improve: {cfg.rounds} rounds x {cfg.episodes_per_round} explored episodes from v{version} ({ckpt}); "
          f"σ {_sigma(cfg.sigma)} rad; {cfg.scenes_per_round} scenes x {cfg.seed_repeat} rollouts per round; "
          f"evaluation on {cfg.eval_episodes} seeds from {cfg.eval_seed}; "
          f"{'direct collection' if cfg.direct else 'collection through the ROS graph'}")

    def make_collector():
        if cfg.direct:
            return DirectCollector(cfg, data, int(pcfg["policy"]["image_size"]))
        from vla_rl_ros.rosio import GraphCollector

        return GraphCollector(ckpt, data, cfg, out / "graph_logs")

    try:
        rows = run_rounds(cfg, rl, ckpt, version, out, make_collector)
    except RuntimeError as e:
        print(f"improve stopped: {e}", file=sys.stderr)
        return 1
    b, a = rows[0]["eval"]["overall"], rows[-1]["eval"]["overall"]
    print(f"\nnoiseless success: {100 * b[0] / max(b[1], 1):.1f}% (v{rows[0]['version']}) -> "
          f"{100 * a[0] / max(a[1], 1):.1f}% (v{rows[-1]['version']}) with {rows[-1]['collected_total']} explored "
          f"episodes in {time.monotonic() - t_start:.0f}s; table {out / 'rounds.json'}, plot {out / 'improve.png'}")
    return 0


def _sigma(sigma) -> str:
    return str(sigma[0]) if len(sigma) == 1 else str(list(sigma))
