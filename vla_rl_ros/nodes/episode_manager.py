"""episode_manager: an operator labels real-robot episodes (the simulator's episode contract).

Where the simulator decides when an episode starts and whether it succeeded, on a real arm a
person does. This node publishes the same contract as ``sim_node`` so that ``trajectory_logger``
(``pairing: ticks`` on the robot graph) records real episodes into the same LeRobot datasets:

- ``~/start`` (std_srvs/Trigger): a new episode; its instruction goes out on the latched
  ``vla/instruction`` topic, then ``{"event": "start", ...}`` on ``vla/episode``;
- ``~/label`` (std_srvs/SetBool): ends it, ``data`` true = success, false = failure
  (``{"event": "end", "success": ..., "reason": "operator"}``);
- ``~/rerecord`` (std_srvs/Trigger): drops the episode in progress (``{"event": "discard"}``),
  nothing of it is saved; start again;
- keys, when the node's terminal is a TTY (``keyboard: true``): ``s`` start, ``y`` success,
  ``n`` failure, ``r`` re-record;
- ``max_duration_s`` (> 0) ends an episode nobody labelled as a failure (reason ``timeout``).

Its status (``vla/episode_manager/status``, JSON, latched) names the episode in progress.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from vla_rl_ros.core.node_config import EpisodeManagerConfig
from vla_rl_ros.nodes.common import (EPISODE_TOPIC, INSTRUCTION_TOPIC, LATCHED_QOS, declare_config, json_msg,
                                     spin_node)

#: keys read from the terminal and what they do
KEYS = {"s": "start", "y": "success", "n": "failure", "r": "rerecord"}


class EpisodeManager(Node):
    def __init__(self):
        super().__init__("episode_manager")
        c = self.config = declare_config(self, EpisodeManagerConfig)
        self.pub_ins = self.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        self.pub_ev = self.create_publisher(String, EPISODE_TOPIC, LATCHED_QOS)
        self.pub_status = self.create_publisher(String, "vla/episode_manager/status", LATCHED_QOS)
        self.episode = c.first_episode - 1
        self.running = False
        self.started_at = 0.0
        self.counts = {"started": 0, "success": 0, "failure": 0, "discarded": 0, "timeout": 0}
        self._lock = threading.Lock()
        self.create_service(Trigger, "~/start", lambda req, res: self._answer(res, self.start()))
        self.create_service(SetBool, "~/label", lambda req, res: self._answer(res, self.label(bool(req.data))))
        self.create_service(Trigger, "~/rerecord", lambda req, res: self._answer(res, self.rerecord()))
        self.create_timer(0.2, self._tick)
        self._publish_status()
        if c.keyboard and sys.stdin is not None and os.isatty(sys.stdin.fileno()):
            threading.Thread(target=self._keys, daemon=True).start()
            self.get_logger().info("keys: s start, y success, n failure, r re-record (then Enter)")

    @staticmethod
    def _answer(res, outcome: tuple[bool, str]):
        res.success, res.message = outcome
        return res

    # ------------------------------------------------------------------ actions
    def start(self) -> tuple[bool, str]:
        with self._lock:
            if self.running:
                return False, f"episode {self.episode} is in progress: label it or re-record it first"
            if not self.config.instruction.strip():
                return False, "no instruction: set the instruction parameter"
            self.episode += 1
            self.running, self.started_at = True, time.monotonic()
            self.counts["started"] += 1
            self.pub_ins.publish(String(data=self.config.instruction))
            self.pub_ev.publish(json_msg({"event": "start", "episode": self.episode,
                                          "instruction": self.config.instruction,
                                          "stamp_ns": self.get_clock().now().nanoseconds}))
        self.get_logger().info(f"episode {self.episode} started: {self.config.instruction!r}")
        self._publish_status()
        return True, f"episode {self.episode} started"

    def label(self, success: bool, reason: str = "operator") -> tuple[bool, str]:
        with self._lock:
            if not self.running:
                return False, "no episode in progress"
            self.running = False
            self.counts["success" if success else "failure"] += 1
            if reason == "timeout":
                self.counts["timeout"] += 1
            seconds = time.monotonic() - self.started_at
            self.pub_ev.publish(json_msg({"event": "end", "episode": self.episode, "success": bool(success),
                                          "reason": reason, "seconds": round(seconds, 3),
                                          "stamp_ns": self.get_clock().now().nanoseconds}))
        word = "success" if success else "failure"
        self.get_logger().info(f"episode {self.episode} ended: {word} ({reason}, {seconds:.1f} s)")
        self._publish_status()
        return True, f"episode {self.episode}: {word}"

    def rerecord(self) -> tuple[bool, str]:
        with self._lock:
            if not self.running:
                return False, "no episode in progress"
            self.running = False
            self.counts["discarded"] += 1
            self.pub_ev.publish(json_msg({"event": "discard", "episode": self.episode}))
        self.get_logger().info(f"episode {self.episode} discarded: start again to re-record it")
        self._publish_status()
        return True, f"episode {self.episode} discarded"

    # ------------------------------------------------------------------ timers, keys
    def _tick(self) -> None:
        limit = self.config.max_duration_s
        if self.running and limit > 0 and time.monotonic() - self.started_at > limit:
            self.label(False, "timeout")

    def _keys(self) -> None:
        for line in sys.stdin:
            action = KEYS.get(line.strip().lower()[:1])
            if action == "start":
                print(self.start()[1], flush=True)
            elif action in ("success", "failure"):
                print(self.label(action == "success")[1], flush=True)
            elif action == "rerecord":
                print(self.rerecord()[1], flush=True)

    def _publish_status(self) -> None:
        self.pub_status.publish(json_msg({"episode": self.episode, "running": self.running,
                                          "instruction": self.config.instruction, **self.counts}))


def main(args=None):
    spin_node(EpisodeManager, args)


if __name__ == "__main__":
    main()
