"""vla_rl_ros: deploy, collect, replay and RL-improve pi0-like VLA policies through ROS 2."""

__version__ = "0.1.0"
