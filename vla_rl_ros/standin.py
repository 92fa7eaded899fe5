"""Stand-ins for the hardware of the ``robot`` graph where there is none (tests, benches).

Only the hardware is stood in for: a video file replaces the camera device (``camera_node``
reads it through the same OpenCV path), and :class:`ArmStandIn` publishes what a ros2_control
arm and an operator would: ``/joint_states`` at the control rate, the instruction and an
episode start on ``/vla/episode``. The graph's nodes are the real ones.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class StandInConfig:
    rate_hz: float = 10.0  # joint states per second
    image_size: int = 96  # the video's frames (square)
    frames: int = 30  # frames in the video file (camera_node loops it)
    instruction: str = "pick up the red cube"


def write_video(path: str | Path, cfg: StandInConfig = StandInConfig()) -> str:
    """A short MJPG clip of changing frames for ``camera_node``'s ``source``."""
    import cv2

    s = cfg.image_size
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (s, s))
    for i in range(cfg.frames):
        w.write(np.full((s, s, 3), (7 * i) % 255, np.uint8))
    w.release()
    return str(path)


class ArmStandIn:
    """Publishes joint states (the arm at rest), the instruction and one episode start from a
    :class:`~vla_rl_ros.nodes.background.BackgroundNode`, until :meth:`close`."""

    def __init__(self, bg, cfg: StandInConfig = StandInConfig(), episode: int = 0):
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from vla_rl_ros.core.robot import PANDA
        from vla_rl_ros.nodes.common import (
            EPISODE_TOPIC,
            INSTRUCTION_TOPIC,
            JOINT_STATES_TOPIC,
            LATCHED_QOS,
            RELIABLE_QOS,
            joint_state_msg,
        )

        self.bg, self.cfg = bg, cfg
        self._q = np.asarray(PANDA.home, float)
        self._JointState = JointState
        self._msg = joint_state_msg
        self.pub_state = bg.node.create_publisher(JointState, JOINT_STATES_TOPIC, RELIABLE_QOS)
        self.pub_instr = bg.node.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        self.pub_event = bg.node.create_publisher(String, EPISODE_TOPIC, LATCHED_QOS)
        self.pub_instr.publish(String(data=cfg.instruction))
        now = bg.node.get_clock().now()
        self.pub_event.publish(String(data=json.dumps(
            {"event": "start", "episode": episode, "instruction": cfg.instruction, "stamp_ns": now.nanoseconds})))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arm-standin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.cfg.rate_hz
        while not self._stop.wait(period):
            stamp = self.bg.node.get_clock().now().to_msg()
            try:
                self.pub_state.publish(self._msg(self._q, np.zeros_like(self._q), stamp))
            except Exception:  # the probe is closing
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def wait_until(pred, timeout: float, poll: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(poll)
    return bool(pred())
