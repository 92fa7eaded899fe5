"""`ros2 launch vla_rl_ros robot.launch.py [arg:=value ...]` — the 'robot' graph of config/graphs/robot.yaml.

Where ros2 launch is unavailable, `vla-rl-ros run robot [arg=value ...]` starts the same nodes.
"""

from vla_rl_ros.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("robot")
