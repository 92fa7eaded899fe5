import sys
import types

import pytest

from vla_rl_ros.graph import GraphError, available_graphs, load_graph, node_command, parse_overrides


def test_every_graph_loads_and_names_real_node_modules():
    import importlib.util

    names = available_graphs()
    assert {"sim", "collect", "replay", "robot"} <= set(names)
    for name in names:
        g = load_graph(name)
        assert g.nodes, name
        for n in g.nodes:
            assert importlib.util.find_spec(f"vla_rl_ros.nodes.{n.executable}") is not None, n
            assert not any("${" in str(v) for v in n.parameters.values()), (name, n)


def test_include_and_typed_overrides():
    g = load_graph("collect", parse_overrides(["episodes=5", "out=/tmp/x", "control_rate=20"]))
    by = {n.name: n for n in g.nodes}
    assert set(by) == {"sim_node", "expert_node", "trajectory_logger"}
    assert by["sim_node"].parameters["episodes"] == 5
    assert by["sim_node"].parameters["control_rate"] == 20
    assert by["trajectory_logger"].parameters["out"] == "/tmp/x"
    assert by["trajectory_logger"].required


def test_bad_graph_names_and_args_are_clear():
    with pytest.raises(GraphError, match="Did you mean 'sim'"):
        load_graph("simm")
    with pytest.raises(GraphError, match="no argument 'bogus'"):
        load_graph("sim", {"bogus": "1"})
    with pytest.raises(GraphError, match="key=value"):
        parse_overrides(["novalue"])


def test_node_command_uses_ros_args():
    g = load_graph("sim")
    cmd = node_command(g.nodes[0], "/tmp/p.yaml")
    assert cmd[1:3] == ["-m", "vla_rl_ros.nodes.sim_node"]
    assert "--params-file" in cmd and "__node:=sim_node" in cmd


def test_launch_files_build_one_node_per_graph_node(monkeypatch):
    """ros2 launch is not installable here: stand in for the launch API at its boundary and
    check that every launch file produces the graph's nodes with the graph's parameters."""
    made = []

    class Rec:
        def __init__(self, *a, **k):
            self.a, self.k = a, k
            made.append(self)

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    class OpaqueFunction(Rec):
        pass

    mods = {
        "launch": types.SimpleNamespace(LaunchDescription=lambda items: items),
        "launch.actions": types.SimpleNamespace(
            DeclareLaunchArgument=Rec, OpaqueFunction=OpaqueFunction, Shutdown=Rec
        ),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        "launch_ros.actions": types.SimpleNamespace(Node=Rec),
    }
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    import runpy
    from pathlib import Path

    launch_dir = Path(__file__).resolve().parents[2] / "launch"
    launch_files = {lf.name.split(".")[0]: lf for lf in launch_dir.glob("*.launch.py")}
    # every graph has its launch file (and no launch file names a graph that does not exist)
    assert sorted(launch_files) == sorted(available_graphs()), (sorted(launch_files), available_graphs())
    for name in available_graphs():
        lf = launch_files[name]
        items = runpy.run_path(str(lf))["generate_launch_description"]()
        opaque = items[-1]
        g = load_graph(name)
        context = {k: str(v) for k, v in g.args.items()}
        nodes = opaque.k["function"](context)
        assert [n.k["executable"] for n in nodes] == [n.executable for n in g.nodes], name
        assert [n.k["parameters"][0] for n in nodes] == [n.parameters for n in g.nodes], name
