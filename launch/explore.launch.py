"""`ros2 launch vla_rl_ros explore.launch.py [arg:=value ...]` — the 'explore' graph of config/graphs/explore.yaml.

Where ros2 launch is unavailable, `vla-rl-ros run explore [arg=value ...]` starts the same nodes.
"""

from vla_rl_ros.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("explore")
