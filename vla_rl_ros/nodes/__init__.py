"""The ROS 2 nodes. A node process started by the graph runner records a stop signal from its
first instruction on (``vla_rl_ros.lifetime.note_node_stop_signals``), before rclpy and torch
are imported, so that no stop is lost while it starts."""

import os as _os

from vla_rl_ros.lifetime import PARENT_PID_ENV as _PARENT_PID_ENV
from vla_rl_ros.lifetime import note_node_stop_signals as _note

if _os.environ.get(_PARENT_PID_ENV):  # started by the graph runner: its SIGINT is the stop
    _note(obey_ignored=True)
