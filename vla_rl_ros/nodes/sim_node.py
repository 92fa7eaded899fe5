"""sim_node: the PyBullet arm, seen from the graph exactly like a real robot.

Subscribes to the JointTrajectoryController topic, publishes ``/joint_states``, camera images,
the instruction, per-step reward/success/done, the applied reference and episode events, and
offers ``/sim/reset`` (std_srvs/Trigger). Physics advances a fixed number of 240 Hz substeps per
control tick on a wall-clock timer (``real_time_factor`` scales it); the policy's speed never
changes how fast simulated time passes — a late chunk simply means the arm holds, as on a robot.
"""

from __future__ import annotations

import time

from geometry_msgs.msg import Pose, PoseArray, Vector3Stamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_rl_ros.core.control import ChunkScheduler, TickMonitor
from vla_rl_ros.core.node_config import SimNodeConfig
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.core.sim.world import PandaWorld, SimConfig
from vla_rl_ros.nodes.common import (
    CONTROLLER_TOPIC,
    EPISODE_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    OBJECT_POSES_TOPIC,
    REFERENCE_TOPIC,
    RELIABLE_QOS,
    REWARD_TOPIC,
    SENSOR_QOS,
    SIM_STATUS_TOPIC,
    MessageError,
    camera_topic,
    chunk_from_msg,
    declare_config,
    image_to_msg,
    joint_state_msg,
    json_msg,
    ns_to_stamp,
    spin_node,
    stamp_to_ns,
)


class SimNode(Node):
    def __init__(self):
        super().__init__("sim_node")
        # long on purpose (~85 lines): a node's __init__ is its wiring (parameters, world, publishers,
        # timers) read in one place, as in ros2/examples; the behaviour lives in the methods below
        c = self.config = declare_config(self, SimNodeConfig)
        self.control_rate = c.control_rate
        self.rtf = c.real_time_factor
        cams = list(c.cameras)
        cfg = SimConfig(control_rate=c.control_rate, image_width=c.image_width, image_height=c.image_height,
                        cameras=tuple(cams), renderer=c.renderer, max_steps=c.max_steps)
        self.family = c.family or None
        self.seed = c.seed
        # episode n uses seed + n // seed_repeat: each scene seen seed_repeat times in a row
        # (groups of rollouts from one initial state for train-rl's leave-one-out baseline)
        self.seed_repeat = c.seed_repeat
        self.episodes = c.episodes  # 0: run forever
        self.auto_reset = c.auto_reset
        self.end_on_success = c.end_on_success
        self.max_steps = c.max_steps
        self.reset_pause = c.reset_pause
        self.start_delay = c.start_delay
        # the first episode waits until these topics (comma-separated) have publishers (e.g. the policy's status, which
        # exists only once its weights are loaded and warmed), so a slow-starting policy does not
        # leave the arm holding through the start of episode 0; after wait_timeout s it starts anyway
        self.wait_for = c.wait_for_publisher
        self.wait_timeout = c.wait_timeout
        # time between publishing an episode's instruction and its first observation (a robot's
        # reset phase): consumers switch instruction before the first frame they must act on
        self.instruction_lead = c.instruction_lead
        # paused: no new episode starts (the running one finishes); settable at run time, e.g. by
        # `vla-rl-ros improve` between collection rounds
        self.paused = c.paused
        # the policy's replanning period in ticks (its replan_every): defines a late tick
        # (core/control.py: chunk_age_is_late) for the tick report on /sim/status and episode ends
        self.replan_every = c.replan_every
        # lockstep: a tick waits for the chunk answering the newest replan observation (at most
        # lockstep_timeout s, then it runs late): the graph then executes exactly what the direct
        # ROS-free loop does, whatever the machine's load (for comparisons, not for deployment)
        self.lockstep = c.lockstep
        self.lockstep_timeout = c.lockstep_timeout
        self.add_on_set_parameters_callback(self._on_params)
        controller_topic = c.controller_topic

        self.world = PandaWorld(cfg)
        if self.family is not None:
            self.world.reset(seed=self.seed, family=self.family)  # validates the family name early
        self.cameras = cams
        self.get_logger().info(
            f"PyBullet world ready: renderer={self.world.renderer_name}, "
            f"{cfg.image_width}x{cfg.image_height} cameras={cams}, control {self.control_rate} Hz, "
            f"real-time factor {self.rtf}"
        )

        self.pub_js = self.create_publisher(JointState, JOINT_STATES_TOPIC, RELIABLE_QOS)
        self.pub_img = {
            c: self.create_publisher(Image, camera_topic(c, i), SENSOR_QOS)
            for i, c in enumerate(cams)
        }
        self.pub_instr = self.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        self.pub_reward = self.create_publisher(Vector3Stamped, REWARD_TOPIC, RELIABLE_QOS)
        self.pub_ref = self.create_publisher(JointState, REFERENCE_TOPIC, RELIABLE_QOS)
        self.pub_event = self.create_publisher(String, EPISODE_TOPIC, LATCHED_QOS)
        self.pub_poses = self.create_publisher(PoseArray, OBJECT_POSES_TOPIC, RELIABLE_QOS)
        self.pub_status = self.create_publisher(String, SIM_STATUS_TOPIC, LATCHED_QOS)
        self.create_subscription(JointTrajectory, controller_topic, self._on_command, RELIABLE_QOS)
        self.create_service(Trigger, "sim/reset", self._on_reset)

        self.scheduler = ChunkScheduler(PANDA.home)
        self.episode = -1
        self.running = False
        self.finished = False
        self.tick = 0
        self.tick_stamps: dict[int, int] = {}  # obs stamp ns -> tick, current episode
        self.episode_start_ns = 0
        self.last_stamp_ns = 0
        self.next_start = time.monotonic() + self.start_delay
        self.created = time.monotonic()
        self.waiting_logged = False
        self.chunk_age: dict[int, int] = {}  # per episode: ticks by index of the point applied (-1: no chunk)
        self.overruns = 0
        self.ticks_episode = TickMonitor(self.replan_every)  # late ticks / chunk age, this episode
        self.ticks_run = TickMonitor(self.replan_every)  # the same over every finished episode
        self.lock_wait_since: float | None = None
        self.first_obs_pending = False
        self.first_obs_at = 0.0
        self.rejected = 0
        self.episode_return = 0.0
        self.create_timer(1.0 / (self.control_rate * self.rtf), self._on_timer)
        self.create_timer(1.0, self._publish_status)

    # ------------------------------------------------------------------ helpers
    def _peer_ready(self) -> bool:
        """True once every topic of ``wait_for_publisher`` (comma-separated) has a publisher, or
        the wait timed out; until then the first episode's start keeps being pushed back by
        ``start_delay``."""
        now = time.monotonic()
        topics = [t.strip() for t in self.wait_for.split(",") if t.strip()]
        missing = [t for t in topics if self.count_publishers(t) == 0]
        if not missing:
            if self.waiting_logged:
                self.get_logger().info(f"{', '.join(topics)} up after {now - self.created:.1f}s: starting")
                self.waiting_logged = False
            self.wait_for = ""
            return True
        if now - self.created > self.wait_timeout:
            self.get_logger().warning(
                f"nothing published {', '.join(missing)} within {self.wait_timeout:.0f}s: starting anyway")
            self.wait_for = ""
            return True
        if not self.waiting_logged:
            self.get_logger().info(f"waiting for a publisher on {', '.join(missing)} before the first episode")
            self.waiting_logged = True
        self.next_start = now + self.start_delay
        return False

    def _stamp_now(self) -> int:
        ns = self.get_clock().now().nanoseconds
        ns = max(ns, self.last_stamp_ns + 1)
        self.last_stamp_ns = ns
        return ns

    def _publish_observation(self) -> None:
        ns = self._stamp_now()
        self.tick_stamps[ns] = self.tick
        stamp = ns_to_stamp(ns)
        self.pub_js.publish(
            joint_state_msg(self.world.joint_positions(), self.world.joint_velocities(), stamp)
        )
        for cam in self.cameras:
            self.pub_img[cam].publish(image_to_msg(self.world.render(cam), stamp, frame_id=cam))
        poses = PoseArray()
        poses.header.stamp = stamp
        # the objects, then the grasp point ("ee"): privileged state the logger can record
        items = sorted(self.world.object_poses().items()) + [("ee", self.world.ee_pose())]
        poses.header.frame_id = ",".join(name for name, _ in items)
        for _, (pos, quat) in items:
            pose = Pose()
            pose.position.x, pose.position.y, pose.position.z = (float(v) for v in pos)
            (pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w) = (
                float(v) for v in quat
            )
            poses.poses.append(pose)
        self.pub_poses.publish(poses)
        self.obs_stamp_ns = ns

    def _start_episode(self) -> None:
        self.episode += 1
        seed = self.seed + self.episode // self.seed_repeat
        self.world.reset(seed=seed, family=self.family)
        self.scheduler.reset(self.world.joint_positions())
        self.tick = 0
        self.tick_stamps = {}
        self.chunk_age = {}
        self.ticks_episode = TickMonitor(self.replan_every)
        self.episode_return = 0.0
        self.running = True
        task = self.world.task
        self.pub_instr.publish(String(data=task.instruction))
        self.episode_start_ns = self._stamp_now()
        self.pub_event.publish(
            json_msg(
                {
                    "event": "start",
                    "episode": self.episode,
                    "seed": seed,
                    "family": task.family,
                    "instruction": task.instruction,
                    "stamp_ns": self.episode_start_ns,
                }
            )
        )
        # the first observation goes out instruction_lead s (at least one tick) later, so every
        # consumer has the new instruction before it (as a robot's reset phase gives them)
        self.first_obs_pending = True
        self.first_obs_at = time.monotonic() + self.instruction_lead

    def _end_episode(self, success: bool, reason: str) -> None:
        self.running = False
        self.ticks_run.merge(self.ticks_episode)
        self.pub_event.publish(
            json_msg(
                {
                    "event": "end",
                    "episode": self.episode,
                    "success": bool(success),
                    "steps": self.tick,
                    "return": self.episode_return,
                    "reason": reason,
                    "chunk_age": {str(k): v for k, v in sorted(self.chunk_age.items())},
                    "ticks": self.ticks_episode.summary(),
                    "family": self.world.task.family,
                    "instruction": self.world.task.instruction,
                }
            )
        )
        self.get_logger().info(
            f"episode {self.episode} ({self.world.task.instruction!r}) ended: {reason}, "
            f"success={success}, {self.tick} steps, return {self.episode_return:.2f}"
        )
        if self.episodes and self.episode + 1 >= self.episodes:
            self.finished = True
            self.pub_event.publish(json_msg({"event": "finished", "episodes": self.episode + 1}))
        self.next_start = time.monotonic() + self.reset_pause

    # ------------------------------------------------------------------ callbacks
    def _on_command(self, msg: JointTrajectory) -> None:
        try:
            chunk = chunk_from_msg(msg, PANDA)
        except MessageError as e:
            self.rejected += 1
            self.get_logger().error(f"rejected trajectory command: {e}")
            return
        bad = [v for row in chunk for v in PANDA.limit_violations(row)]
        if bad:
            self.rejected += 1
            self.get_logger().error(
                f"rejected trajectory command beyond joint limits: {'; '.join(sorted(set(bad))[:4])}"
            )
            return
        if not self.running:
            return
        ns = stamp_to_ns(msg.header.stamp)
        if ns == 0:
            anchor = self.tick  # "start now": point 0 is the target for the next tick
        elif ns in self.tick_stamps:
            anchor = self.tick_stamps[ns]
        elif ns < self.episode_start_ns:
            self.get_logger().warning("ignored a chunk stamped before this episode began (stale)")
            return
        else:  # a stamp from another clock/source: anchor at the latest observation before it
            earlier = [t for s, t in self.tick_stamps.items() if s <= ns]
            anchor = max(earlier) if earlier else self.tick
        self.scheduler.offer(chunk, anchor, ns)

    def _on_reset(self, request, response):
        if self.running:
            self._end_episode(False, "reset")
        self.finished = False
        self.next_start = time.monotonic()
        response.success = True
        response.message = f"episode {self.episode + 1} starts at the next tick"
        return response

    def _on_params(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "paused":
                self.paused = bool(prm.value)
                self.get_logger().info("paused: no new episode starts" if self.paused else "resumed")
        return SetParametersResult(successful=True)

    def _on_timer(self) -> None:
        if not self.running:
            if self.finished or self.paused or (not self.auto_reset and self.episode >= 0):
                return
            if self.episode < 0 and self.wait_for and not self._peer_ready():
                return
            if time.monotonic() >= self.next_start:
                self._start_episode()
            return
        if self.first_obs_pending:
            if time.monotonic() < self.first_obs_at:
                return
            self.first_obs_pending = False
            self._publish_observation()
            return
        if self.lockstep and self.scheduler.waiting_for(self.tick, self.replan_every):
            now = time.monotonic()
            if self.lock_wait_since is None:
                self.lock_wait_since = now
            if now - self.lock_wait_since < self.lockstep_timeout:
                return  # wait for the chunk of the newest replan observation
            self.get_logger().warning(f"lockstep: no chunk for tick {self.tick} within "
                                      f"{self.lockstep_timeout:.0f}s: running on without it")
        self.lock_wait_since = None
        t0 = time.perf_counter()
        obs_ns = self.obs_stamp_ns
        target, ref = self.scheduler.target(self.tick)
        age = self.scheduler.last_index
        self.chunk_age[age] = self.chunk_age.get(age, 0) + 1
        self.ticks_episode.record(age)
        self.world.apply_action(target)
        self.pub_ref.publish(joint_state_msg(target, None, ns_to_stamp(obs_ns), frame_id=ref))
        info = self.world.step_control()
        self.episode_return += float(info.reward)
        r = Vector3Stamped()
        r.header.stamp = ns_to_stamp(obs_ns)
        r.header.frame_id = str(self.episode)
        r.vector.x, r.vector.y, r.vector.z = float(info.reward), float(info.success), float(info.done)
        self.pub_reward.publish(r)
        self.tick += 1
        self._publish_observation()
        if info.done and (self.end_on_success or not info.success or self.tick >= self.max_steps):
            self._end_episode(bool(info.success), "success" if info.success else "timeout")
        if time.perf_counter() - t0 > 1.0 / (self.control_rate * self.rtf):
            self.overruns += 1

    def _publish_status(self) -> None:
        """Late ticks and chunk age (core/control.py: TickMonitor) over every tick so far."""
        run = TickMonitor(self.replan_every)
        run.merge(self.ticks_run)
        if self.running:
            run.merge(self.ticks_episode)
        status = run.summary()
        status.update(episode=self.episode, running=self.running, overruns=self.overruns,
                      rejected_commands=self.rejected, lockstep=self.lockstep)
        self.pub_status.publish(json_msg(status))

    def shutdown(self) -> None:
        self.world.close()


def main(args=None) -> int:
    return spin_node(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
