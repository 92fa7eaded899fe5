"""``vla-rl-ros <verb>``: the command line, one module per verb.

Verbs: ``run <graph>`` (start a node graph as real ROS 2 processes), ``collect`` (sim + expert +
logger -> LeRobot dataset, with a progress bar and a success table), ``replay DIR`` (publish a
dataset back onto the topics), ``summary DIR`` (the success table of a dataset), ``graphs``,
``train-bc``, ``evaluate``, ``compare A B`` (two checkpoints paired on a held-out seed bank),
``train-rl``, ``train-wm`` (the world model), ``rollback``, ``sign``, ``improve``, ``import-bag`` / ``export-bag`` (rosbag2 / MCAP in and out).

Each verb module has ``HELP``, ``add_arguments(parser)`` (options generated from the verb's config
dataclass, ``core/config.py``) and ``main(args) -> int``; none imports rclpy at import time, so
``--help`` and the ROS-free verbs never load it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: verb -> module of vla_rl_ros.cli
VERBS = {
    "graphs": "graphs",
    "run": "run",
    "collect": "collect",
    "replay": "replay",
    "train-bc": "train_bc",
    "train-grounding": "train_grounding",
    "evaluate": "evaluate",
    "compare": "compare",
    "train-rl": "train_rl",
    "train-wm": "train_wm",
    "rollback": "rollback",
    "sign": "sign",
    "improve": "improve",
    "summary": "summary",
    "import-bag": "import_bag",
    "export-bag": "export_bag",
    "view": "view",
}


def verb_module(verb: str):
    return importlib.import_module(f"vla_rl_ros.cli.{VERBS[verb]}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vla-rl-ros", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    for verb in VERBS:
        mod = verb_module(verb)
        p = sub.add_parser(verb, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(fn=mod.main)
    return ap


def main(argv=None) -> int:
    from vla_rl_ros.lifetime import StopRequested

    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except StopRequested as e:  # SIGTERM/SIGHUP in a verb without its own Ctrl-C handling (graphs stopped)
        print(f"\nstopped by {e}", file=sys.stderr)
        return 128 + e.signum
