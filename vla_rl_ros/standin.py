"""Stand-ins for the hardware of the ``robot`` graph where there is none (tests, benches).

Only the hardware is stood in for: a video file replaces the camera device (``camera_node``
reads it through the same OpenCV path), and :class:`ArmStandIn` publishes what a ros2_control
arm and an operator would: ``/joint_states`` at the control rate, the instruction and an
episode start on ``/vla/episode``. The graph's nodes are the real ones. :class:`PolicyStandIn`
stands in for a policy trained on a robot no shipped checkpoint fits (ur5e, so100): chunks in the
robot's own joint names (the real arm behind it is ``mock_arm_node``).
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


class PolicyStandIn:
    """Chunks of 8 points in ``profile``'s joint names at 10 Hz on ``<namespace>/vla/action_chunk``:
    small moves around the newest ``<namespace>/joint_states`` (a policy trained on that robot).
    ``kill()`` stops it."""

    def __init__(self, probe, profile, step: float = 0.02, namespace: str = ""):
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory

        from vla_rl_ros.nodes.common import RELIABLE_QOS

        self.probe, self.p, self.step = probe, profile, step
        self.states = f"{namespace}/joint_states"
        probe.collect(JointState, self.states, RELIABLE_QOS)
        self.pub = probe.node.create_publisher(JointTrajectory, f"{namespace}/vla/action_chunk", RELIABLE_QOS)
        self.sent = 0
        self.last_sent = None  # time.monotonic() of the newest chunk
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from vla_rl_ros.nodes.common import seconds_to_duration

        while not self.stop.is_set():
            msgs = self.probe.msgs(self.states)
            if msgs:
                js = msgs[-1][1]
                q = np.array([js.position[list(js.name).index(j)] for j in self.p.joints])
                msg = JointTrajectory(joint_names=list(self.p.joints))
                for i in range(8):
                    pt = JointTrajectoryPoint()
                    wave = np.sin(0.3 * self.sent + np.arange(len(q)))
                    pt.positions = [float(v) for v in q + self.step * (i + 1) * wave]
                    pt.time_from_start = seconds_to_duration(0.1 * (i + 1))
                    msg.points.append(pt)
                self.pub.publish(msg)
                self.last_sent = time.monotonic()
                self.sent += 1
            time.sleep(0.1)

    def kill(self):
        self.stop.set()
        self.t.join(2)
