"""`ros2 launch vla_rl_ros replay.launch.py [arg:=value ...]` — the 'replay' graph of config/graphs/replay.yaml.

Where ros2 launch is unavailable, `vla-rl-ros run replay [arg=value ...]` starts the same nodes.
"""

from vla_rl_ros.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("replay")
