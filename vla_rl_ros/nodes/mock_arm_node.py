"""mock_arm_node: a stand-in for a ros2_control arm (the one thing that cannot exist here).

It behaves like ros2_control's mock hardware under a JointTrajectoryController, for a robot
profile (``config/robots``): it publishes ``/joint_states`` (positions and velocities of the
profile's joints) at ``rate`` Hz and executes trajectories from the profile's controller topic
with the controller's **acceptance rules** (ros2_controllers' ``validate_trajectory_msg``):

- the joint names must be exactly the controller's joints (no partial goals, no unknown or
  repeated names);
- every point has one position per joint, velocities empty or one per joint;
- ``time_from_start`` strictly increasing;
- a trajectory with a non-zero stamp that ends in the past is rejected;
- an empty trajectory holds the current position.

A non-finite value or a target outside the profile's position limits is counted as a fault (real
hardware would trip). Accepted trajectories are followed by linear interpolation from the state at
arrival. A gripper on its own topic (``Float64MultiArray``) is followed too.

For the safety tests it also watches ``/vla/safety/estop`` as an observer and reports, on
``/mock_arm/status`` (JSON, 10 Hz): accepted / rejected (by reason) / holds, motion commands
received after an e-stop (+ ``estop_grace_s``) or while its own joint states were paused (+
``stale_grace_s``), the largest commanded velocity as a fraction of the limit, targets outside the
limits. ``publish_states`` (settable at run time) pauses the joint states: a stale-input fault.
"""

from __future__ import annotations

import re
import time

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from vla_rl_ros.core.node_config import MockArmNodeConfig
from vla_rl_ros.core.robot_profile import load_profile
from vla_rl_ros.core.topics import JOINT_STATES_TOPIC, MOCK_ARM_STATUS_TOPIC, SAFETY_ESTOP_TOPIC
from vla_rl_ros.nodes.common import (LATCHED_QOS, RELIABLE_QOS, declare_config, duration_to_seconds, json_msg,
                                     ns_to_stamp, spin_node, stamp_to_ns)


def jtc_validate(msg: JointTrajectory, joints: tuple, now_ns: int) -> str | None:
    """Why a JointTrajectoryController would reject ``msg`` (None: accepted)."""
    names = list(msg.joint_names)
    if not names:
        return "empty joint_names"
    if len(set(names)) != len(names):
        return "repeated joint names"
    unknown = [n for n in names if n not in joints]
    if unknown:
        return f"unknown joints {unknown}"
    if len(names) != len(joints):
        return f"partial goal: {len(names)} of {len(joints)} joints"
    prev = None
    for i, pt in enumerate(msg.points):
        if len(pt.positions) != len(names):
            return f"point {i}: {len(pt.positions)} positions for {len(names)} joints"
        if len(pt.velocities) not in (0, len(names)):
            return f"point {i}: {len(pt.velocities)} velocities for {len(names)} joints"
        t = duration_to_seconds(pt.time_from_start)
        if prev is not None and t <= prev:
            return f"point {i}: time_from_start not increasing"
        prev = t
    stamp = stamp_to_ns(msg.header.stamp)
    if stamp != 0 and msg.points and stamp + int(prev * 1e9) < now_ns:
        return "trajectory ends in the past"
    return None


class MockArmNode(Node):
    def __init__(self):
        super().__init__("mock_arm_node")
        c = self.config = declare_config(self, MockArmNodeConfig)
        self.profile = p = load_profile(c.profile)
        self.joints = p.controller_joints
        self.all_joints = p.joints
        self.q = p.home.copy()
        self.dq = np.zeros_like(self.q)
        self.plan = None  # (t0 monotonic, times (H+1,), positions (H+1, n_arm))
        self.publish_states = c.publish_states
        self.stamp_offset_ns = int(c.stamp_offset_s * 1e9)
        self.blocked = c.blocked
        self.paused_at = None if c.publish_states else time.monotonic()
        self.estop_at = None
        self.stats = {"accepted": 0, "rejected": 0, "reasons": {}, "holds": 0, "motion": 0, "faults": 0,
                      "outside_limits": 0, "motion_after_estop": 0, "motion_while_stale": 0,
                      "max_velocity_fraction": 0.0, "last_motion_wall": None, "gripper_commands": 0}
        self.pub = self.create_publisher(JointState, JOINT_STATES_TOPIC, RELIABLE_QOS)
        self.pub_status = self.create_publisher(String, MOCK_ARM_STATUS_TOPIC, LATCHED_QOS)
        self.create_subscription(JointTrajectory, p.arm_topic, self._on_trajectory, RELIABLE_QOS)
        self.create_subscription(Bool, SAFETY_ESTOP_TOPIC, self._on_estop, LATCHED_QOS)
        if self.get_namespace() != "/":  # the global e-stop stops every arm
            self.create_subscription(Bool, "/" + SAFETY_ESTOP_TOPIC, self._on_estop, LATCHED_QOS)
        if p.gripper_interface == "topic":
            self.create_subscription(Float64MultiArray, p.gripper_name, self._on_gripper, RELIABLE_QOS)
        self.add_on_set_parameters_callback(self._on_params)
        self.create_timer(1.0 / c.rate, self._step)
        self.create_timer(0.1, lambda: self.pub_status.publish(json_msg(self.stats)))
        self.get_logger().info(f"mock {p.name} arm: {list(self.joints)} on {p.arm_topic}")

    def _on_params(self, params):
        for prm in params:
            if prm.name == "blocked":
                self.blocked = bool(prm.value)
            if prm.name == "stamp_offset_s":
                self.stamp_offset_ns = int(float(prm.value) * 1e9)
            if prm.name == "publish_states":
                self.publish_states = bool(prm.value)
                self.paused_at = None if self.publish_states else time.monotonic()
        return SetParametersResult(successful=True)

    def _on_estop(self, msg: Bool) -> None:
        self.estop_at = time.monotonic() if msg.data else None

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        if len(msg.data) == 1 and np.isfinite(msg.data[0]):
            self.q[-1] = float(np.clip(msg.data[0], self.profile.lower[-1], self.profile.upper[-1]))
            self.stats["gripper_commands"] += 1

    def _reject(self, why: str) -> None:
        self.stats["rejected"] += 1
        key = re.sub(r"point \d+", "point", re.sub(r"\d+ of \d+", "some", why))
        self.stats["reasons"][key] = self.stats["reasons"].get(key, 0) + 1
        self.get_logger().error(f"trajectory rejected: {why}")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        now = time.monotonic()
        why = jtc_validate(msg, self.joints, self.get_clock().now().nanoseconds)
        if why is not None:
            self._reject(why)
            return
        self.stats["accepted"] += 1
        n = len(self.joints)
        if not msg.points:
            self.stats["holds"] += 1
            self.plan = None
            self.dq[:] = 0.0
            return
        order = [list(msg.joint_names).index(j) for j in self.joints]
        x = np.array([[pt.positions[i] for i in order] for pt in msg.points], float)
        t = np.array([duration_to_seconds(pt.time_from_start) for pt in msg.points])
        if not np.all(np.isfinite(x)):
            self.stats["faults"] += 1
            self._reject("non-finite target (hardware fault)")
            return
        p = self.profile
        lo, hi = p.lower[:n], p.upper[:n]
        self.stats["outside_limits"] += int(np.sum(np.any((x < lo - 1e-9) | (x > hi + 1e-9), axis=1)))
        path = np.vstack([self.q[None, :n], x])
        times = np.concatenate([[0.0], t])
        v = np.abs(np.diff(path, axis=0)) / np.maximum(np.diff(times), 1e-9)[:, None]
        self.stats["max_velocity_fraction"] = max(self.stats["max_velocity_fraction"],
                                                  float(np.max(v / p.velocity[:n])))
        self.stats["motion"] += 1
        self.stats["last_motion_wall"] = time.time()
        if self.estop_at is not None and now - self.estop_at > self.config.estop_grace_s:
            self.stats["motion_after_estop"] += 1
        if self.paused_at is not None and now - self.paused_at > self.config.stale_grace_s:
            self.stats["motion_while_stale"] += 1
        self.plan = (now, times, np.clip(path, lo, hi))

    def _step(self) -> None:
        n = len(self.joints)
        if self.plan is not None and self.blocked:  # an obstacle: the joints do not move
            self.dq[:n] = 0.0
        elif self.plan is not None:
            t0, times, path = self.plan
            t = time.monotonic() - t0
            prev = self.q[:n].copy()
            if t >= times[-1]:
                self.q[:n] = path[-1]
                self.plan = None
            else:
                self.q[:n] = [np.interp(t, times, path[:, j]) for j in range(n)]
            self.dq[:n] = (self.q[:n] - prev) * self.config.rate
        else:
            self.dq[:n] = 0.0
        if not self.publish_states:
            return
        msg = JointState()
        msg.header.stamp = ns_to_stamp(self.get_clock().now().nanoseconds + self.stamp_offset_ns)
        msg.name = list(self.all_joints)
        msg.position = [float(v) for v in self.q]
        msg.velocity = [float(v) for v in self.dq]
        self.pub.publish(msg)


def main(args=None):
    spin_node(MockArmNode, args)


if __name__ == "__main__":
    main()
