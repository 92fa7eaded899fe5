"""replay_node: publishes a recorded LeRobot dataset back onto the graph's topics.

Per recorded frame, stamped now: camera images, ``/joint_states`` (the recorded state), the
recorded reward on ``/vla/reward``, the executed action as the reference, plus the instruction
and episode start/end events — at the recorded rate times ``real_time_factor``. With
``publish_actions: true`` the recorded actions also go to the controller topic (this moves a
robot: off by default). Useful for debugging, for re-logging, and for shadow-mode evaluation
(a policy node answers recorded observations while nothing moves).
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Vector3Stamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from vla_rl_ros.core.data.reader import episode_frames, open_dataset, parse_episode_list
from vla_rl_ros.core.node_config import ReplayNodeConfig
from vla_rl_ros.nodes.common import (
    declare_config,
    CONTROLLER_TOPIC,
    EPISODE_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    REFERENCE_TOPIC,
    RELIABLE_QOS,
    REWARD_TOPIC,
    SENSOR_QOS,
    camera_topic,
    chunk_msg,
    image_to_msg,
    joint_state_msg,
    json_msg,
    ns_to_stamp,
    spin_node,
)


class ReplayNode(Node):
    def __init__(self):
        super().__init__("replay_node")
        c = self.config = declare_config(self, ReplayNodeConfig)
        self.speed = c.real_time_factor
        self.publish_actions = c.publish_actions
        self.loop = c.loop
        self.ds = open_dataset(c.data)
        n = int(self.ds.meta.total_episodes)
        self.episode_ids = parse_episode_list(c.episode_ids, n)
        self.fps = float(self.ds.meta.fps)
        self.cameras = [
            k.split(".", 2)[2] for k in self.ds.meta.features if k.startswith("observation.images.")
        ]
        self.pub_js = self.create_publisher(JointState, JOINT_STATES_TOPIC, RELIABLE_QOS)
        self.pub_img = {
            c: self.create_publisher(Image, camera_topic(c, i), SENSOR_QOS)
            for i, c in enumerate(self.cameras)
        }
        self.pub_instr = self.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        self.pub_event = self.create_publisher(String, EPISODE_TOPIC, LATCHED_QOS)
        self.pub_reward = self.create_publisher(Vector3Stamped, REWARD_TOPIC, RELIABLE_QOS)
        self.pub_ref = self.create_publisher(JointState, REFERENCE_TOPIC, RELIABLE_QOS)
        self.pub_cmd = (
            self.create_publisher(JointTrajectory, CONTROLLER_TOPIC, RELIABLE_QOS)
            if self.publish_actions else None
        )
        self.status_pub = self.create_publisher(String, "vla/replay/status", LATCHED_QOS)
        self.cursor = 0  # index into episode_ids
        self.frame = 0
        self.data: dict | None = None
        self.published = 0
        self.done = False
        self.get_logger().info(
            f"replaying {len(self.episode_ids)} episode(s) of {c.data} at {self.fps * self.speed:.1f} Hz"
            f" (x{self.speed}); cameras {self.cameras}; actions to controller: {self.publish_actions}"
        )
        self.create_timer(1.0 / (self.fps * self.speed), self._on_timer)

    def _load(self) -> None:
        ep = self.episode_ids[self.cursor]
        self.data = episode_frames(self.ds, ep)
        self.frame = 0
        task = str(self.data["task"])
        self.pub_instr.publish(String(data=task))
        self.pub_event.publish(
            json_msg({"event": "start", "episode": int(ep), "instruction": task, "replay": True,
                      "stamp_ns": self.get_clock().now().nanoseconds})
        )

    def _on_timer(self) -> None:
        if self.done:
            return
        if self.data is None:
            self._load()
        d = self.data
        i = self.frame
        stamp = ns_to_stamp(self.get_clock().now().nanoseconds)
        for cam in self.cameras:
            img = np.asarray(d[f"observation.images.{cam}"][i])
            self.pub_img[cam].publish(image_to_msg(img, stamp, frame_id=cam))
        self.pub_js.publish(joint_state_msg(d["observation.state"][i], None, stamp))
        self.pub_ref.publish(joint_state_msg(d["action"][i], None, stamp, frame_id="replay"))
        if self.pub_cmd is not None:
            self.pub_cmd.publish(chunk_msg(d["action"][i][None, :], stamp, self.fps))
        r = Vector3Stamped()
        r.header.stamp = stamp
        r.header.frame_id = str(self.episode_ids[self.cursor])
        r.vector.x = float(d["next.reward"][i])
        r.vector.y = float(bool(d["next.success"][i]))
        r.vector.z = float(bool(d["next.done"][i]))
        self.pub_reward.publish(r)
        self.published += 1
        self.frame += 1
        if self.frame >= len(d["observation.state"]):
            ep = self.episode_ids[self.cursor]
            self.pub_event.publish(
                json_msg(
                    {
                        "event": "end", "episode": int(ep), "steps": self.frame,
                        "success": bool(d["next.success"][-1]), "replay": True,
                    }
                )
            )
            self.cursor += 1
            self.data = None
            if self.cursor >= len(self.episode_ids):
                if self.loop:
                    self.cursor = 0
                else:
                    self.done = True
                    self.pub_event.publish(json_msg({"event": "finished", "frames": self.published}))
                    self.get_logger().info(f"replay finished: {self.published} frames published")
        if self.done or self.published % 10 == 0:
            self.status_pub.publish(json_msg({"published": self.published, "done": self.done}))


def main(args=None) -> int:
    return spin_node(ReplayNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
