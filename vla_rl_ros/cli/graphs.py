"""``vla-rl-ros graphs``: list the node graphs and their arguments."""

from __future__ import annotations

HELP = "list the node graphs"


def add_arguments(p) -> None:
    pass


def main(args) -> int:
    from vla_rl_ros.graph import available_graphs, load_graph

    for name in available_graphs():
        g = load_graph(name)
        print(f"{name:10s} {g.description}")
        print(f"{'':10s} args: " + ", ".join(f"{k}={v!r}" for k, v in g.args.items()))
    return 0
