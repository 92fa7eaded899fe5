"""``vla-rl-ros run <graph> [key=value ...]``: start a node graph (like ros2 launch) until Ctrl-C."""

from __future__ import annotations

import sys

from vla_rl_ros.cli.common import RosOptions, die
from vla_rl_ros.core.config import add_fields

HELP = "start a node graph (like ros2 launch) until Ctrl-C"


def add_arguments(p) -> None:
    p.add_argument("graph", help="graph name (vla-rl-ros graphs lists them)")
    p.add_argument("overrides", nargs="*", help="graph arguments as key=value")
    add_fields(p, RosOptions)


def main(args) -> int:
    from vla_rl_ros.graph import GraphError, GraphRunner, load_graph, parse_overrides

    try:
        graph = load_graph(args.graph, parse_overrides(args.overrides))
    except GraphError as e:
        die(str(e))
    print(f"starting graph {graph.name!r}: " + ", ".join(n.name for n in graph.nodes))
    runner = GraphRunner(graph, log_dir=args.log_dir, domain_id=args.domain_id).start()
    try:
        runner.wait()
    except KeyboardInterrupt:
        print("\nstopping ...")
    codes = runner.stop()
    bad = {n: c for n, c in codes.items() if c not in (0, -2, None)}
    for n, c in bad.items():
        print(f"node {n} exited with code {c}", file=sys.stderr)
        if args.log_dir:
            print(runner.tail(n), file=sys.stderr)
    return 1 if bad else 0
