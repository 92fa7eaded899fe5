"""expert_node: the scripted IK expert as a ROS node, acting through the same topics as a policy.

It sees what a privileged demonstrator sees — ``/joint_states``, ``/sim/object_poses`` and the
instruction — and answers every observation with a chunk on the controller topic (with its
exploration noise, if any) and the noise-free chunk as the "mean" on ``/vla/action_chunk``, both
stamped with the observation's stamp.
"""

from __future__ import annotations

import json

import numpy as np
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from vla_rl_ros.core.node_config import ExpertNodeConfig
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.core.sim.expert import ScriptedExpert
from vla_rl_ros.core.sim.tasks import parse_instruction
from vla_rl_ros.nodes.common import (
    declare_config,
    ACTION_CHUNK_TOPIC,
    EPISODE_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    OBJECT_POSES_TOPIC,
    RELIABLE_QOS,
    MessageError,
    chunk_msg,
    joint_state_to_array,
    ns_to_stamp,
    poses_from_msg,
    spin_node,
    stamp_to_ns,
)


class ExpertNode(Node):
    def __init__(self):
        super().__init__("expert_node")
        c = self.config = declare_config(self, ExpertNodeConfig)
        self.control_rate = c.control_rate
        self.horizon = c.horizon
        self.expert = ScriptedExpert(noise_std=c.expert_noise, seed=c.seed)
        self.pub_cmd = self.create_publisher(JointTrajectory, c.controller_topic, RELIABLE_QOS)
        self.pub_mean = self.create_publisher(JointTrajectory, ACTION_CHUNK_TOPIC, RELIABLE_QOS)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joints, RELIABLE_QOS)
        self.create_subscription(PoseArray, OBJECT_POSES_TOPIC, self._on_poses, RELIABLE_QOS)
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, LATCHED_QOS)
        self.create_subscription(String, EPISODE_TOPIC, self._on_event, LATCHED_QOS)
        self.instruction: str | None = None
        self.joints: dict[int, np.ndarray] = {}
        self.poses: dict[int, dict] = {}
        self.answered = 0

    def _reset(self, instruction: str) -> None:
        try:
            spec = parse_instruction(instruction)
        except ValueError as e:
            self.get_logger().error(f"cannot act on instruction {instruction!r}: {e}")
            self.instruction = None
            return
        self.instruction = instruction
        self.expert.reset(spec)
        self.joints.clear()
        self.poses.clear()

    def _on_instruction(self, msg: String) -> None:
        if msg.data != self.instruction:
            self._reset(msg.data)

    def _on_event(self, msg: String) -> None:
        try:
            ev = json.loads(msg.data)
        except json.JSONDecodeError:
            self.get_logger().error(f"malformed episode event {msg.data[:80]!r}")
            return
        if ev.get("event") == "start":
            self._reset(str(ev.get("instruction", "")))

    def _on_joints(self, msg: JointState) -> None:
        try:
            self.joints[stamp_to_ns(msg.header.stamp)] = joint_state_to_array(msg)
        except MessageError as e:
            self.get_logger().error(str(e))
            return
        self._maybe_act()

    def _on_poses(self, msg: PoseArray) -> None:
        try:
            self.poses[stamp_to_ns(msg.header.stamp)] = poses_from_msg(msg)
        except MessageError as e:
            self.get_logger().error(str(e))
            return
        self._maybe_act()

    def _maybe_act(self) -> None:
        ready = sorted(set(self.joints) & set(self.poses))
        if not ready or self.instruction is None:
            return
        ns = ready[-1]
        q, poses = self.joints[ns], self.poses[ns]
        for d in (self.joints, self.poses):  # drop this and anything older
            for k in [k for k in d if k <= ns]:
                del d[k]
        chunk = self.expert.plan_chunk(q, poses, self.horizon, 1.0 / self.control_rate)
        chunk = np.clip(chunk, PANDA.lower, PANDA.upper)  # a scripted expert: no likelihood
        clean = np.clip(self.expert.last_clean_chunk, PANDA.lower, PANDA.upper)
        try:
            msg = chunk_msg(chunk, ns_to_stamp(ns), self.control_rate, policy_version=0)
            mean_msg = chunk_msg(clean, ns_to_stamp(ns), self.control_rate, policy_version=0)
        except MessageError as e:
            self.get_logger().error(f"expert produced an unusable chunk: {e}")
            return
        self.pub_cmd.publish(msg)
        # the "mean" is the expert's noise-free intention: the logger stores it as rl.action_mean,
        # which behaviour cloning imitates (DART: execute noisy, imitate clean)
        self.pub_mean.publish(mean_msg)
        self.answered += 1


def main(args=None) -> int:
    return spin_node(ExpertNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
