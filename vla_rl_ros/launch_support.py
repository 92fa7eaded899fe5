"""Turns a graph description (config/graphs/<name>.yaml) into a ROS 2 LaunchDescription.

Used by the thin files in ``launch/`` on machines with ROS 2 installed; ``launch`` and
``launch_ros`` are imported only here, lazily, so the rest of the package works without them.
"""

from __future__ import annotations

from vla_rl_ros.graph import load_graph


def graph_launch_description(name: str):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    defaults = load_graph(name)
    declared = [
        DeclareLaunchArgument(k, default_value=str(v), description=f"graph argument {k}")
        for k, v in defaults.args.items()
    ]

    def nodes(context, *args, **kwargs):
        overrides = {k: LaunchConfiguration(k).perform(context) for k in defaults.args}
        graph = load_graph(name, overrides)
        return [
            Node(
                package="vla_rl_ros",
                executable=n.executable,
                name=n.name,
                namespace=n.namespace or None,
                parameters=[n.parameters],
                output="screen",
                on_exit=Shutdown() if n.required else None,
            )
            for n in graph.nodes
        ]

    return LaunchDescription(declared + [OpaqueFunction(function=nodes)])
