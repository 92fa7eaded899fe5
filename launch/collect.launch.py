"""`ros2 launch vla_rl_ros collect.launch.py [arg:=value ...]` — the 'collect' graph of config/graphs/collect.yaml.

Where ros2 launch is unavailable, `vla-rl-ros run collect [arg=value ...]` starts the same nodes.
"""

from vla_rl_ros.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("collect")
