"""`ros2 launch vla_rl_ros policy_sim.launch.py [arg:=value ...]` — the 'policy_sim' graph of
config/graphs/policy_sim.yaml (the VLA policy driving the PyBullet arm).

Where ros2 launch is unavailable, `vla-rl-ros run policy_sim [arg=value ...]` starts the same nodes.
"""

from vla_rl_ros.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("policy_sim")
