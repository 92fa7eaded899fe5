"""``vla-rl-ros replay DIR``: publish a recorded dataset back onto the graph's topics."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vla_rl_ros.cli.common import RosOptions, build_or_die, dataset_summaries, require_datasets
from vla_rl_ros.core.config import add_fields, opt

HELP = "publish a recorded dataset onto the graph's topics"


@dataclass(frozen=True)
class ReplayConfig(RosOptions):
    data: str = opt("", "LeRobot dataset folder", positional=True)
    real_time_factor: float = opt(1.0, "playback speed (1: the recorded rate)", aliases=("--speed",))
    episode_ids: str = opt("", "episodes to publish: '0,3,5:9' (default: all)", aliases=("--episodes",))
    publish_actions: bool = opt(False, "also command the controller with the recorded actions")


def add_arguments(p) -> None:
    add_fields(p, ReplayConfig)


def main(args) -> int:
    from vla_rl_ros.graph import GraphRunner, load_graph
    from vla_rl_ros.rosio import GraphMonitor

    cfg = build_or_die(ReplayConfig, args)
    require_datasets([cfg.data])
    rows = dataset_summaries(cfg.data)
    print(f"replaying {cfg.data}: {len(rows)} episodes")
    graph = load_graph("replay", {"data": str(Path(cfg.data).resolve()), "real_time_factor": cfg.real_time_factor,
                                  "episode_ids": cfg.episode_ids, "publish_actions": cfg.publish_actions,
                                  "loop": False})
    monitor = GraphMonitor(cfg.domain_id)
    runner = GraphRunner(graph, log_dir=cfg.log_dir or None, domain_id=cfg.domain_id).start()
    code = 1
    try:
        while True:
            time.sleep(0.25)
            ev = [e for e in monitor.events if e.get("event") == "finished"]
            if ev:
                print(f"replay finished: {ev[-1].get('frames')} frames published")
                code = 0
                break
            if runner.dead():
                print(f"replay_node exited: {runner.dead()}", file=sys.stderr)
                if cfg.log_dir:
                    print(runner.tail("replay_node"), file=sys.stderr)
                break
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        monitor.close()
    return code
