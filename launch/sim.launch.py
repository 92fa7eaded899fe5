"""`ros2 launch vla_rl_ros sim.launch.py [arg:=value ...]` — the 'sim' graph of config/graphs/sim.yaml.

Where ros2 launch is unavailable, `vla-rl-ros run sim [arg=value ...]` starts the same nodes.
"""

from vla_rl_ros.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("sim")
