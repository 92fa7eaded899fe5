"""``vla-rl-ros run <graph> [key=value ...]``: start a node graph (like ros2 launch) until Ctrl-C."""

from __future__ import annotations

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
    return GraphRunner(graph, log_dir=args.log_dir or None, domain_id=args.domain_id).run()
