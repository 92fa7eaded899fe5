"""trajectory_logger: writes every episode seen on the graph into a LeRobot (v3) dataset.

Pairs state, images, the applied reference, reward and chunks by observation stamp (see
``core/recording.py``), and hands each finished episode to a background writer (``core/data``)
so that saving never blocks this node's executor. Publishes its counters on
``/vla/logger/status`` (JSON) twice a second and after every saved episode.
"""

from __future__ import annotations

import json
import time

import numpy as np
from geometry_msgs.msg import PoseArray, Vector3Stamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from vla_rl_ros.core.collect import ENV_STATE_NAMES, environment_state_from_poses
from vla_rl_ros.core.data.schema import make_features
from vla_rl_ros.core.data.writer import EpisodeWriter
from vla_rl_ros.core.recording import ChunkRecord, EpisodeAssembler, TickAnchors
from vla_rl_ros.core.node_config import LoggerConfig
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.core.robot_profile import joint_rename
from vla_rl_ros.nodes.common import (
    ACTION_CHUNK_TOPIC,
    SIGMA_TOPIC,
    EPISODE_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    POLICY_STATUS_TOPIC,
    LOGGER_STATUS_TOPIC,
    OBJECT_POSES_TOPIC,
    REFERENCE_TOPIC,
    RELIABLE_QOS,
    REWARD_TOPIC,
    DEEP_SENSOR_QOS,
    MessageError,
    camera_topic,
    chunk_from_msg,
    declare_config,
    joint_state_to_array,
    json_msg,
    msg_to_image,
    policy_version_of,
    poses_from_msg,
    spin_node,
    stamp_to_ns,
)


class TrajectoryLogger(Node):
    def __init__(self):
        super().__init__("trajectory_logger")
        c = self.config = declare_config(self, LoggerConfig)
        self.root = c.out
        repo_id = c.repo_id
        control_rate = c.control_rate
        self.cameras = list(c.cameras)
        h, w = c.image_height, c.image_width
        self.image_hw = (h, w)
        self.end_grace = c.end_grace
        # simulation: also record the privileged object + grasp-point positions from
        # /sim/object_poses (train-rl's privileged critic reads them); a frame then needs them too
        self.record_env = c.environment_state
        env_names = ENV_STATE_NAMES if self.record_env else ()
        features = make_features(list(PANDA.joint_names), self.cameras, image_shape=(h, w),
                                 environment_state=env_names)
        self.writer = EpisodeWriter(
            root=self.root, repo_id=repo_id, fps=int(round(control_rate)), features=features,
            robot_type="panda",
        )
        self.assembler = EpisodeAssembler(self.cameras, PANDA.dof, lower=PANDA.lower, upper=PANDA.upper,
                                          env_size=len(env_names))
        self.status_pub = self.create_publisher(String, LOGGER_STATUS_TOPIC, LATCHED_QOS)

        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_state, RELIABLE_QOS)
        for i, cam in enumerate(self.cameras):
            self.create_subscription(
                Image, camera_topic(cam, i), lambda m, c=cam: self._on_image(c, m), DEEP_SENSOR_QOS
            )
        if self.record_env:
            self.create_subscription(PoseArray, OBJECT_POSES_TOPIC, self._on_poses, RELIABLE_QOS)
        self.create_subscription(JointState, REFERENCE_TOPIC, self._on_reference, RELIABLE_QOS)
        self.create_subscription(Vector3Stamped, REWARD_TOPIC, self._on_reward, RELIABLE_QOS)
        self.create_subscription(String, EPISODE_TOPIC, self._on_event, LATCHED_QOS)
        # what the policy believes it is doing (its status: the instruction it received and the
        # skill it understood), stored with every episode
        self.policy_language: dict = {}
        self.create_subscription(String, POLICY_STATUS_TOPIC, self._on_policy_status, LATCHED_QOS)
        if c.controller_topic:  # the robot graph: the policy's chunks are what the arm executes
            self.create_subscription(JointTrajectory, c.controller_topic, self._on_executed, RELIABLE_QOS)
        self.create_subscription(JointTrajectory, ACTION_CHUNK_TOPIC, self._on_mean, RELIABLE_QOS)
        self.create_subscription(JointTrajectory, SIGMA_TOPIC, self._on_sigma, RELIABLE_QOS)

        self.counters = {"episodes_seen": 0, "submitted": 0, "dropped_frames": 0, "bad_messages": 0, "discarded": 0}
        # bags: one exporter thread, off the executor (it reads the saved episode back from the dataset)
        self.bags = EpisodeBags(self.root, c.bag_dir, self.get_logger()) if c.bag_dir else None
        # pairing ticks (a real robot): the newest inputs, sampled into a frame every control tick
        self.ticks = c.pairing == "ticks"
        self.rename = joint_rename(c.robot_profile, PANDA.joint_names)
        self.control_rate = control_rate
        self.latest_state: tuple[float, np.ndarray] | None = None
        self.latest_images: dict[str, tuple[float, np.ndarray]] = {}
        self.last_tick_ns: int | None = None
        self.anchors = TickAnchors(self.cameras)
        if self.ticks:
            self.create_timer(1.0 / control_rate, self._on_tick)
        self.to_close: list[tuple[float, dict]] = []
        self.failures_reported = 0
        self.seen_episodes: set[int] = set()
        self.create_timer(0.05, self._flush_due)
        # executor responsiveness: how late a 100 Hz timer fires (max since start, ms)
        self._tick_period = 0.01
        self._last_tick = None
        self.max_stall_ms = 0.0
        self.create_timer(self._tick_period, self._watch_stall)
        self.create_timer(0.5, self._publish_status)
        self.get_logger().info(f"logging to {self.root} (cameras {self.cameras}, {w}x{h}"
                               f"{', environment state' if self.record_env else ''})")

    # ------------------------------------------------------------------ inputs
    def _bad(self, what: str, e: Exception) -> None:
        self.counters["bad_messages"] += 1
        self.get_logger().error(f"ignored {what}: {e}")

    def _on_state(self, msg: JointState) -> None:
        if self.rename:
            msg.name = [self.rename.get(n, n) for n in msg.name]
        try:
            q = joint_state_to_array(msg)
        except MessageError as e:
            self._bad("joint state", e)
            return
        if self.ticks:
            self.latest_state = (time.monotonic(), q)
        else:
            self.assembler.add_state(stamp_to_ns(msg.header.stamp), q)

    def _on_image(self, cam: str, msg: Image) -> None:
        try:
            img = msg_to_image(msg, self.image_hw)
        except MessageError as e:
            self._bad(f"image on camera {cam}", e)
            return
        if self.ticks:
            self.latest_images[cam] = (time.monotonic(), img)
            self.anchors.image(cam, stamp_to_ns(msg.header.stamp), img,
                               None if self.latest_state is None else self.latest_state[1])
        else:
            self.assembler.add_image(cam, stamp_to_ns(msg.header.stamp), img)

    def _on_poses(self, msg: PoseArray) -> None:
        try:
            env = environment_state_from_poses(poses_from_msg(msg))
        except ValueError as e:  # MessageError is a ValueError
            self._bad("object poses", e)
            return
        self.assembler.add_env(stamp_to_ns(msg.header.stamp), env)

    def _on_reference(self, msg: JointState) -> None:
        try:
            q = joint_state_to_array(msg)
        except MessageError as e:
            self._bad("reference", e)
            return
        self.assembler.add_reference(stamp_to_ns(msg.header.stamp), q, msg.header.frame_id)

    def _on_reward(self, msg: Vector3Stamped) -> None:
        v = msg.vector
        if not np.isfinite(v.x):
            self._bad("reward", ValueError("non-finite reward"))
            return
        self.assembler.add_reward(stamp_to_ns(msg.header.stamp), v.x, v.y > 0.5, v.z > 0.5)

    def _chunk(self, msg: JointTrajectory) -> ChunkRecord | None:
        try:
            return ChunkRecord(chunk_from_msg(msg), policy_version_of(msg))
        except MessageError as e:
            self._bad("chunk", e)
            return None

    def _on_executed(self, msg: JointTrajectory) -> None:
        rec = self._chunk(msg)
        if rec is not None:
            self.assembler.add_executed_chunk(stamp_to_ns(msg.header.stamp), rec)

    def _on_mean(self, msg: JointTrajectory) -> None:
        rec = self._chunk(msg)
        if rec is not None:
            self.assembler.add_mean_chunk(stamp_to_ns(msg.header.stamp), rec)

    def _on_sigma(self, msg: JointTrajectory) -> None:
        try:
            sigma = chunk_from_msg(msg)
        except MessageError as e:
            self._bad("sigma", e)
            return
        if not (np.all(sigma >= 0) and np.any(sigma > 0)):  # 0: a dimension executed as μ
            self._bad("sigma", MessageError("sigma must be >= 0 with at least one value > 0"))
            return
        self.assembler.add_sigma(stamp_to_ns(msg.header.stamp), sigma)

    def _on_policy_status(self, msg: String) -> None:
        try:
            st = json.loads(msg.data)
        except (json.JSONDecodeError, TypeError):
            return  # not ours to judge: the policy's status is informational here
        if isinstance(st, dict) and st.get("understood") is not None:
            self.policy_language = {"policy_instruction": st.get("instruction"), "understood_as": st.get("understood_as"),
                                    "understood": st.get("understood"), "confidence": st.get("confidence")}

    def _on_event(self, msg: String) -> None:
        try:
            ev = json.loads(msg.data)
        except json.JSONDecodeError as e:
            self._bad("episode event", e)
            return
        kind, ep = ev.get("event"), ev.get("episode")
        if kind == "start":
            if ep in self.seen_episodes:
                return  # a latched re-delivery
            self.seen_episodes.add(ep)
            instruction = str(ev.get("instruction", "")).strip()
            if not instruction:
                self.get_logger().error(f"episode {ep} has an empty instruction; not recording it")
                return
            self.counters["episodes_seen"] += 1
            start_ns = int(ev.get("stamp_ns", self.get_clock().now().nanoseconds - 50_000_000))
            self.assembler.start(
                int(ep), instruction, {k: ev[k] for k in ("seed", "family") if k in ev}, start_ns
            )
            self.anchors.new_episode()
        elif kind == "end" and ep in self.assembler.episodes:
            if self.ticks:  # the operator's label: the episode's last tick carries the outcome
                if self.last_tick_ns is not None:
                    ok = bool(ev.get("success"))
                    self.assembler.add_reward(self.last_tick_ns, 1.0 if ok else 0.0, ok, True)
                self._close_episode(ev)
                return
            # pieces of the last ticks may still be in flight on other topics: close a bit later
            self.to_close.append((time.monotonic() + self.end_grace, ev))
        elif kind == "discard" and ep in self.assembler.episodes:  # re-record: nothing of it is saved
            self.assembler.end({}, episode=ep)
            self.counters["discarded"] += 1
            self.get_logger().info(f"episode {ep} discarded by the operator")

    def _on_tick(self) -> None:
        """pairing ticks: one frame from the newest inputs, stamped now. Its action is the target
        sent for this tick (point ``round((now - chunk stamp) * rate) - 1`` of the newest chunk on
        ``controller_topic``, the explored a = μ + ε when exploring; of the policy's μ when the
        graph has no such topic), or the measured state while no chunk is fresh (the arm holds);
        μ, σ and log π(a) of the same chunk and point join the frame. Its reward is 0 until the
        operator's label closes the episode."""
        if not self.assembler.active:
            return
        now = time.monotonic()
        ns = self.get_clock().now().nanoseconds
        fresh = (self.latest_state is not None and now - self.latest_state[0] <= self.config.max_input_age
                 and all(c in self.latest_images and now - self.latest_images[c][0] <= self.config.max_input_age
                         for c in self.cameras))
        if not fresh:
            self.counters["dropped_frames"] += 1
            return
        q = self.latest_state[1]
        self.assembler.add_state(ns, q)
        for c in self.cameras:
            self.assembler.add_image(c, ns, self.latest_images[c][1])
        action, ref, chunk_ns, index = q, "hold", None, -1
        sent = self.assembler.executed if self.config.controller_topic else self.assembler.means
        if sent:
            newest = max(sent)
            rec = sent[newest]
            age = (ns - newest) * 1e-9
            if age <= len(rec.chunk) / self.control_rate + self.config.max_input_age:  # it still covers this tick
                chunk_ns = newest
                index = min(max(int(round(age * self.control_rate)) - 1, 0), len(rec.chunk) - 1)
                action, ref = rec.chunk[index], f"{chunk_ns}:{index}"
        anchor = self.anchors.tick(ns, chunk_ns, index)
        if anchor is not None:  # the decision's observation: the one its chunk was computed from
            at, images, state = anchor
            self.assembler.add_state(at, state)
            for c, img in images.items():
                self.assembler.add_image(c, at, img)
        self.assembler.add_reference(ns, action, ref)
        self.assembler.add_reward(ns, 0.0, False, False)
        self.last_tick_ns = ns

    def _watch_stall(self) -> None:
        now = time.perf_counter()
        if self._last_tick is not None:
            late = (now - self._last_tick - self._tick_period) * 1e3
            self.max_stall_ms = max(self.max_stall_ms, late)
        self._last_tick = now

    # ------------------------------------------------------------------ output
    def _flush_due(self) -> None:
        now = time.monotonic()
        due = [x for x in self.to_close if x[0] <= now]
        self.to_close = [x for x in self.to_close if x[0] > now]
        for _, ev in due:
            self._close_episode(ev)
        for done in self.writer.poll():
            how = "recovered from the spool" if done.recovered else "saved"
            self.get_logger().info(
                f"{how} episode {done.episode_index} ({done.frames} frames) in {done.seconds:.2f}s"
            )
            if self.bags is not None:
                self.bags.submit(done.episode_index)
            self._publish_status()
        for failed in self.writer.failed_episodes()[self.failures_reported:]:
            self.failures_reported += 1
            self.get_logger().error(f"an episode could not be written: {failed.error}")

    def _close_episode(self, ev: dict) -> None:
        ep = self.assembler.end(
            {k: ev[k] for k in ("success", "reason", "steps", "return") if k in ev},
            episode=ev.get("episode"),
        )
        if ep is None:
            return
        self.counters["dropped_frames"] += ep.dropped
        if not ep.frames:
            self.get_logger().warning(f"episode {ep.episode} had no complete frame; nothing saved")
            return
        if ep.dropped:
            self.get_logger().warning(f"episode {ep.episode}: {ep.dropped} incomplete frame(s) dropped")
        meta = dict(ep.meta, **self.policy_language)
        try:
            self.writer.submit(ep.frames, ep.task, meta)
        except ValueError as e:
            self._bad(f"episode {ep.episode}", e)
            return
        self.counters["submitted"] += 1

    def _publish_status(self) -> None:
        status = dict(self.counters)
        status.update(
            saved=len(self.writer.saved_episodes()), pending=self.writer.pending(), root=self.root,
            failed=len(self.writer.failed_episodes()), max_stall_ms=round(self.max_stall_ms, 2),
            recording=self.assembler.active, **self.anchors.counts,
        )
        if self.bags is not None:
            status["bags_written"] = self.bags.written
        self.status_pub.publish(json_msg(status))

    def shutdown(self) -> None:
        for _, ev in self.to_close:  # finished episodes still waiting for their grace period
            self._close_episode(ev)
        self.to_close = []
        for ep in list(self.assembler.episodes):  # unfinished: left out, never saved half-done
            self.get_logger().warning(f"shutting down during episode {ep}: it is not saved")
            self.assembler.episodes.pop(ep)
        self.writer.close(timeout=300.0)
        if self.bags is not None:  # episodes saved during close(), then every bag finished
            for done in self.writer.poll():
                self.bags.submit(done.episode_index)
            self.bags.close()


class EpisodeBags:
    """Writes saved episodes as bags in one background thread; failures are logged, never raised
    (the dataset is the record; a bag is a copy)."""

    def __init__(self, root: str, bag_dir: str, logger):
        from concurrent.futures import ThreadPoolExecutor
        from pathlib import Path

        self.root, self.dir, self.log = root, Path(bag_dir), logger
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bags")
        self.written = 0

    def submit(self, episode_index: int) -> None:
        self.pool.submit(self._write, int(episode_index))

    def _write(self, ep: int) -> None:
        from vla_rl_ros.core.bags import export_bag

        path = self.dir / f"episode_{ep:06d}"
        try:
            export_bag(self.root, path, [ep])
            self.written += 1
        except Exception as e:  # noqa: BLE001 - a failed copy must not stop the recording
            self.log.error(f"episode {ep}: bag {path} not written: {e}")

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def main(args=None) -> int:
    return spin_node(TrajectoryLogger, args)


if __name__ == "__main__":
    raise SystemExit(main())
