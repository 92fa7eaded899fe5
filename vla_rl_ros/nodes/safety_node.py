"""safety_node: the only path from the policy's chunks to a robot's controller.

Subscribes to the policy's chunks (``chunk_topic``, the checkpoint's joint names, mapped onto the
robot through its profile's ``policy_joints``), the measured joint states, and one camera topic
(watched for staleness only). Every chunk goes through ``core/safety.SafetyLayer``: refused if not
finite or not continuous with the measured state, clipped to the position limits less a margin,
time-stretched to respect the velocity and acceleration limits, sent with velocities and a zero
stamp (the controller starts it on arrival) on the profile's JointTrajectoryController topic; a
gripper on its own controller gets its target on the profile's topic.

Operator interface (the README's "Running on a real arm"):
- ``/vla/safety/enable`` (std_srvs/SetBool): start / stop commanding. The node starts disabled when
  ``dry_run`` (robot graphs): chunks are checked and the would-be command is published on
  ``/vla/safety/dry_run`` only.
- ``/vla/safety/hold`` (std_srvs/Trigger): hold until enabled again.
- ``/vla/safety/move_to_start`` (std_srvs/Trigger): a slow move to the profile's home pose (not
  while e-stopped; it does not enable). With ``start_tolerance`` > 0 (the robot graph), enable is
  refused while the arm is farther than that from home.
- ``/vla/safety/estop`` (std_msgs/Bool, latched): true holds at once and latches; nothing moves
  until it is published false *and* the node is enabled again. In a namespace (two arms), the
  node obeys both its own ``<ns>/vla/safety/estop`` and the global ``/vla/safety/estop``.
- Joint state stamps farther than ``max_clock_offset_s`` from this computer's clock (an
  unsynchronised robot computer) → hold until they agree.
- Tracking: an arm joint that, over ``tracking_error_s``, moved less than 15% of the
  ``> tracking_error_max`` it was commanded (an obstacle, a faulted drive, an inactive
  controller) → hold until enabled again.
- Watchdogs: joint states older than ``state_timeout_s``, no image for ``image_timeout_s``, no
  chunk for ``chunk_timeout_s`` (the policy node died or stalled) → hold; the arm resumes when
  the input is fresh again. A hold is one empty trajectory: a JointTrajectoryController holds its
  current position.
- ``/vla/safety/status`` (JSON, latched, 2 Hz and at every change): state, hold reasons, counts.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_rl_ros.core.node_config import SafetyNodeConfig
from vla_rl_ros.core.robot_profile import ProfileError, limits_from_urdf, load_profile, resolve_urdf, tip_function
from vla_rl_ros.core.safety import SafetyLayer
from vla_rl_ros.core.topics import (SAFETY_DRY_RUN_TOPIC, SAFETY_ENABLE_SERVICE, SAFETY_ESTOP_TOPIC,
                                    SAFETY_HOLD_SERVICE, SAFETY_MOVE_TO_START_SERVICE, SAFETY_STATUS_TOPIC)
from vla_rl_ros.nodes.common import (LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, Diagnostics, declare_config,
                                     duration_to_seconds, json_msg, seconds_to_duration, spin_node, stamp_to_ns)

#: longest chunk accepted (points) and longest joint-name list: bounds on hostile messages
MAX_POINTS, MAX_JOINTS = 256, 64


class SafetyNode(Node):
    def __init__(self):
        super().__init__("safety_node")
        c = self.config = declare_config(self, SafetyNodeConfig)
        self.profile = load_profile(c.profile)
        self.layer = SafetyLayer(self.profile, c)
        self.workspace = "no kinematics in the profile: joint limits only"
        if self.profile.urdf:
            self.layer.tip = tip_function(self.profile, resolve_urdf(self.profile.urdf))
            self.workspace = f"{self.profile.tip_link} inside the box (URDF {self.profile.urdf})"
        elif self.profile.tip_link:
            self.workspace = f"waiting for /robot_description for {self.profile.tip_link}: joint limits only until then"
        if not c.dry_run:
            self.layer.enable(True)
        p = self.profile
        self.arm_topic = c.controller_topic or p.arm_topic
        self.n_arm = len(p.controller_joints)
        self.pub_cmd = self.create_publisher(JointTrajectory, self.arm_topic, RELIABLE_QOS)
        self.pub_dry = self.create_publisher(JointTrajectory, SAFETY_DRY_RUN_TOPIC, RELIABLE_QOS)
        self.pub_status = self.create_publisher(String, SAFETY_STATUS_TOPIC, LATCHED_QOS)
        self.pub_grip = None
        self.gripper_note = ""
        if p.gripper_interface == "topic":
            self.pub_grip = self.create_publisher(Float64MultiArray, p.gripper_name, RELIABLE_QOS)
        elif p.gripper_interface == "action":
            try:  # control_msgs has no wheel: import-gated (ENVIRONMENT.md)
                from control_msgs.action import GripperCommand  # noqa: F401
                self.gripper_note = "GripperCommand action client not built yet: gripper not commanded"
            except ImportError:
                self.gripper_note = ("control_msgs is not installed: the gripper (GripperCommand action "
                                     f"{p.gripper_name}) is not commanded; the arm is")
            self.get_logger().error(self.gripper_note)
        self.q = self.dq = None
        self.last = {"joint_states": None, "image": None, "chunk": None}
        self.started = time.monotonic()
        self.index_cache: dict[tuple, np.ndarray] = {}
        self.last_grip = None
        self.last_log = 0.0
        self.create_subscription(JointTrajectory, c.chunk_topic, self._on_chunk, RELIABLE_QOS)
        self.create_subscription(JointState, c.joint_states_topic, self._on_state, RELIABLE_QOS)
        if c.image_topic:
            self.create_subscription(Image, c.image_topic, self._on_image, SENSOR_QOS)
        else:
            self.last.pop("image")
        self.create_subscription(Bool, SAFETY_ESTOP_TOPIC, self._on_estop, LATCHED_QOS)
        if self.get_namespace() != "/":  # an arm in a namespace also obeys the global e-stop (every arm)
            self.create_subscription(Bool, "/" + SAFETY_ESTOP_TOPIC, self._on_estop, LATCHED_QOS)
        if c.use_robot_description:
            self.create_subscription(String, "robot_description", self._on_description, LATCHED_QOS)
        self.create_service(SetBool, SAFETY_ENABLE_SERVICE, self._on_enable)
        self.create_service(Trigger, SAFETY_HOLD_SERVICE, self._on_hold)
        self.create_service(Trigger, SAFETY_MOVE_TO_START_SERVICE, self._on_move_to_start)
        self.create_timer(1.0 / c.watchdog_rate, self._watchdog)
        self.create_timer(0.5, self._publish_status)
        self.diagnostics = Diagnostics(self, f"vla_rl_ros safety ({self.profile.name})")
        self.get_logger().info(
            f"profile {p.name}: commanding {list(p.controller_joints)} on {self.arm_topic}; "
            + ("DRY RUN until /vla/safety/enable" if c.dry_run else "enabled") + f"; workspace: {self.workspace}")

    # ------------------------------------------------------------------ inputs
    def _log(self, text: str) -> None:
        now = time.monotonic()
        if now - self.last_log > 1.0:
            self.get_logger().warning(text)
            self.last_log = now

    def _on_state(self, msg: JointState) -> None:
        p = self.profile
        names = list(msg.name)
        if len(names) > MAX_JOINTS or len(msg.position) != len(names):
            self._log(f"joint state refused: {len(names)} names, {len(msg.position)} positions")
            return
        try:
            idx = [names.index(j) for j in p.joints]
        except ValueError:
            self._log(f"joint state refused: it lacks some of {list(p.joints)}")
            return
        q = np.array([msg.position[i] for i in idx], float)
        if not np.all(np.isfinite(q)):
            self._log("joint state refused: non-finite position")
            return
        dq = None
        if len(msg.velocity) == len(names):
            dq = np.array([msg.velocity[i] for i in idx], float)
            dq = dq if np.all(np.isfinite(dq)) else None
        self.q, self.dq = q, dq
        self.last["joint_states"] = time.monotonic()
        if self.layer.track(self.last["joint_states"], q):
            self._send_hold(", ".join(sorted(self.layer.hold_reasons)))
        offset = (self.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)) * 1e-9
        bad = abs(offset) > self.config.max_clock_offset_s
        if bad:
            self._log(f"joint state stamps are {offset:+.2f} s from this computer's clock (limit "
                      f"{self.config.max_clock_offset_s} s): holding until the clocks agree (chrony / PTP)")
        if self.layer.set_reason("joint_states clock offset", bad):
            self._send_hold(f"joint state stamps {offset:+.2f} s off the local clock")

    def _on_image(self, msg: Image) -> None:
        self.last["image"] = time.monotonic()

    def _on_description(self, msg: String) -> None:
        try:
            lim = limits_from_urdf(msg.data, self.profile.joints)
        except ProfileError as e:
            self.get_logger().error(f"/robot_description ignored: {e}")
            return
        p = self.profile
        lower = np.where(np.isfinite(lim["lower"]), np.maximum(lim["lower"], p.lower), p.lower)
        upper = np.where(np.isfinite(lim["upper"]), np.minimum(lim["upper"], p.upper), p.upper)
        vel = np.where(np.isfinite(lim["velocity"]) & (lim["velocity"] > 0), np.minimum(lim["velocity"], p.velocity),
                       p.velocity)
        if np.any(lower >= upper):
            self.get_logger().error("/robot_description limits do not overlap the profile's: ignored")
            return
        tip = self.layer.tip
        if p.tip_link and not p.urdf:
            try:
                tip = tip_function(p, msg.data)
                self.workspace = f"{p.tip_link} inside the box (URDF from /robot_description)"
            except ProfileError as e:
                self.get_logger().error(f"no workspace check: {e}")
        self.layer = SafetyLayer(self.profile.with_limits(lower, upper, vel), self.config, self.layer.state,
                                 self.layer.hold_reasons, self.layer.counters, self.layer.last_refusal, tip)
        self.get_logger().info("limits from /robot_description (the stricter of it and the profile)")

    def _on_chunk(self, msg: JointTrajectory) -> None:
        now = time.monotonic()
        names = tuple(msg.joint_names)
        if not msg.points or len(msg.points) > MAX_POINTS or len(names) > MAX_JOINTS:
            self._refuse(f"chunk with {len(msg.points)} points and {len(names)} joints")
            return
        idx = self.index_cache.get(names)
        if idx is None:
            try:
                idx = self.profile.policy_index(names)
            except ProfileError as e:
                self._refuse(str(e))
                return
            self.index_cache[names] = idx
        try:
            rows = np.array([[pt.positions[i] for i in idx] for pt in msg.points], float)
            times = np.array([duration_to_seconds(pt.time_from_start) for pt in msg.points])
        except (IndexError, TypeError, ValueError):
            self._refuse("a point has fewer positions than joint names")
            return
        if any(len(pt.positions) != len(names) for pt in msg.points):
            self._refuse("a point's positions do not match its joint names")
            return
        steps = np.diff(np.concatenate([[0.0], times]))
        if not (np.all(np.isfinite(steps)) and np.all(steps > 0)):
            self._refuse("time_from_start must be positive and strictly increasing")
            return
        self.last["chunk"] = now
        if self.q is None:
            self._refuse("no joint state yet")
            return
        cmd, why = self.layer.command(rows, float(np.median(steps)), self.q, self.dq)
        if why.startswith("refused"):
            self._log(f"chunk {why}")
        if cmd is None:
            if why.startswith("dry run"):
                ok = self.layer.check(rows, float(np.median(steps)), self.q, self.dq)
                self.pub_dry.publish(self._trajectory(ok))
            return
        if self._allowed():
            self.pub_cmd.publish(self._trajectory(cmd))
            na = len(self.profile.arm_joints)
            self.layer.tracking.sent(time.monotonic(), self.q[:na], cmd.times, cmd.positions[:, :na])
            self._gripper(cmd.positions[0])

    def _refuse(self, why: str) -> None:
        self.layer.counters["refused"] += 1
        self.layer.last_refusal = why
        self._log(f"chunk refused: {why}")

    def _allowed(self) -> bool:
        """The last check before a motion command leaves: enabled, no hold, fresh joint states."""
        ts = self.last["joint_states"]
        return (self.layer.commanding() and ts is not None
                and time.monotonic() - ts <= self.config.state_timeout_s)

    # ------------------------------------------------------------------ outputs
    def _trajectory(self, cmd) -> JointTrajectory:
        msg = JointTrajectory()  # header.stamp zero: the controller starts it on arrival
        msg.joint_names = list(self.profile.controller_joints)
        for x, v, t in zip(cmd.positions, cmd.velocities, cmd.times):
            pt = JointTrajectoryPoint()
            pt.positions = [float(a) for a in x[: self.n_arm]]
            pt.velocities = [float(a) for a in v[: self.n_arm]]
            pt.time_from_start = seconds_to_duration(float(t))
            msg.points.append(pt)
        return msg

    def _gripper(self, target: np.ndarray) -> None:
        if self.pub_grip is None:
            return
        g = float(target[-1])
        if self.last_grip is None or abs(g - self.last_grip) > 1e-4:
            self.pub_grip.publish(Float64MultiArray(data=[g]))
            self.last_grip = g

    def _send_hold(self, why: str) -> None:
        self.layer.tracking.clear()  # the arm stops where it is: no trajectory to follow
        msg = JointTrajectory()  # no points: a JointTrajectoryController holds where it is
        msg.joint_names = list(self.profile.controller_joints)
        self.pub_cmd.publish(msg)
        self.get_logger().warning(f"HOLD: {why}")
        self._publish_status()

    # ------------------------------------------------------------------ operator and watchdogs
    def _on_enable(self, req, res):
        res.success, res.message = self.layer.enable(bool(req.data), self.q)
        if not req.data:
            self._send_hold("disabled by the operator")
        self.get_logger().info(f"enable({req.data}): {res.message}")
        self._publish_status()
        return res

    def _on_hold(self, req, res):
        self.layer.hold()
        self._send_hold("operator hold")
        res.success, res.message = True, "holding until /vla/safety/enable"
        return res

    def _on_move_to_start(self, req, res):
        """A slow move to the profile's home pose (``move_speed`` of the limits), whatever the
        state but the e-stop; it does not enable: the policy stays off until /vla/safety/enable."""
        ts = self.last["joint_states"]
        if self.layer.state == "estopped":
            res.success, res.message = False, "e-stop is latched"
        elif self.q is None or ts is None or time.monotonic() - ts > self.config.state_timeout_s:
            res.success, res.message = False, "no fresh joint state"
        else:
            if self.layer.commanding():
                self.layer.hold()  # the policy must not fight the move
            cmd = self.layer.move_to(self.q, self.profile.home, 1.0 / self.config.watchdog_rate * 5)
            self.pub_cmd.publish(self._trajectory(cmd))
            self._gripper(cmd.positions[-1])
            res.success, res.message = True, f"moving to the start pose in {cmd.times[-1]:.1f} s"
        self.get_logger().info(f"move_to_start: {res.message}")
        self._publish_status()
        return res

    def _on_estop(self, msg: Bool) -> None:
        if self.layer.estop(bool(msg.data)):
            self._send_hold("E-STOP")
        else:
            self.get_logger().info("e-stop cleared: enable again to move")
            self._publish_status()

    def _watchdog(self) -> None:
        now = time.monotonic()
        ages = {k: (None if t is None else now - t) for k, t in self.last.items()}
        if now - self.started < max(self.config.chunk_timeout_s, 1.0):  # start-up: inputs are still coming
            ages = {k: (0.0 if a is None else a) for k, a in ages.items()}
        if self.layer.watch(ages):
            self._send_hold(", ".join(sorted(self.layer.hold_reasons)))

    def _publish_status(self) -> None:
        now = time.monotonic()
        st = self.layer.status()
        st.update(profile=self.profile.name, controller_topic=self.arm_topic, gripper=self.gripper_note or "ok",
                  workspace=self.workspace,
                  input_age_s={k: (None if t is None else round(now - t, 3)) for k, t in self.last.items()})
        self.pub_status.publish(json_msg(st))
        level = ("error" if self.layer.state == "estopped" else "warn" if self.layer.hold_reasons
                 or self.layer.state == "disabled" else "ok")
        why = ", ".join(sorted(self.layer.hold_reasons))
        self.diagnostics.publish(level, self.layer.state + (f": {why}" if why else ""),
                                 {k: v for k, v in st.items() if not isinstance(v, (dict, list))})


def main(args=None):
    spin_node(SafetyNode, args)


if __name__ == "__main__":
    main()
