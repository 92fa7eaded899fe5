"""Shared pieces of the thin rclpy nodes: QoS profiles, topic names, message <-> numpy.

Topic contract (all names are parameters; these are the defaults):

=============================================  ==================================  =====================
topic                                          type                                content
=============================================  ==================================  =====================
``/camera/image_raw`` (+ ``/camera/<cam>/…``)  sensor_msgs/Image (rgb8)           camera frames, best-effort
``/joint_states``                              sensor_msgs/JointState              joint positions/velocities
``/vla/instruction``                           std_msgs/String                     task instruction (latched)
``/joint_trajectory_controller/joint_trajectory``  trajectory_msgs/JointTrajectory executed chunk (controller)
``/vla/action_chunk``                          trajectory_msgs/JointTrajectory     the policy's mean chunk μ
``/joint_trajectory_controller/reference``     sensor_msgs/JointState              target applied per tick
``/vla/reward``                                geometry_msgs/Vector3Stamped        x=reward y=success z=done
``/vla/episode``                               std_msgs/String (JSON)              episode start/end events
``/sim/object_poses``                          geometry_msgs/PoseArray             privileged object + grasp-point poses
``/vla/logger/status``                         std_msgs/String (JSON)              logger counters
=============================================  ==================================  =====================

Field layouts (documented in the README as well):

* A chunk (``JointTrajectory``) has ``header.stamp`` = the stamp of the observation it was
  computed from (the chunk's identity); point ``i`` is the joint target for the control tick
  ``i + 1`` after that observation (``time_from_start = (i+1)/control_rate``).
  ``header.frame_id`` may carry ``"policy_version=<int>"``. A stamp of zero means "start now".
* The reference (``JointState``) has ``header.stamp`` = stamp of the observation at the start of
  the control interval it was applied over, and ``header.frame_id = "<chunk_stamp_ns>:<index>"``
  naming the chunk point (``"hold"`` when the controller held its position).
* ``/vla/reward``: ``header.stamp`` = stamp of the observation the transition started from (the
  reward is that frame's ``next.reward``), ``header.frame_id`` = episode index.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import PoseArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_rl_ros.core.robot import PANDA, JointLayoutError, RobotSpec
from vla_rl_ros.core.topics import (  # noqa: F401  (re-exported: the nodes import them from here)
    ACTION_CHUNK_TOPIC,
    CONTROLLER_TOPIC,
    EPISODE_TOPIC,
    EXPLORATION_STATUS_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    LOGGER_STATUS_TOPIC,
    OBJECT_POSES_TOPIC,
    POLICY_ROLLBACK_SERVICE,
    POLICY_STATUS_TOPIC,
    POLICY_SWAP_TOPIC,
    POLICY_WEIGHTS_TOPIC,
    REFERENCE_TOPIC,
    REWARD_TOPIC,
    SIGMA_TOPIC,
    SIM_STATUS_TOPIC,
)
from vla_rl_ros.lifetime import exit_process as end_process
from vla_rl_ros.lifetime import NODE_STOP, PARENT_PID_ENV, note_node_stop_signals, watch_parent

STOP_EXECUTOR_TIMEOUT_S = 0.5  # a stopping node waits this long for callbacks still running
# rclpy shuts the context down on a thread of its own after SIGINT / SIGTERM, so an executor can
# fail inside a take *before* rclpy.ok() turns False: an error followed this soon by the context
# going down is that race, not a fault (measured: 1 robot-graph stop in 30 exited 1 with pybind11's
# "Unable to convert call argument '0'" while rclpy.ok() was still True)
STOP_RACE_S = 0.5

SENSOR_QOS = qos_profile_sensor_data
# Subscribers that must not lose frames when their process is briefly starved (the logger)
# keep a deep best-effort queue: compatible with sensor-data publishers, 100 samples deep.
DEEP_SENSOR_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
RELIABLE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE
)
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def camera_topic(camera: str, index: int) -> str:
    """The first camera publishes on ``/camera/image_raw``; others on ``/camera/<name>/image_raw``."""
    return "camera/image_raw" if index == 0 else f"camera/{camera}/image_raw"


# --------------------------------------------------------------------------- time
def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def seconds_to_duration(s: float) -> Duration:
    ns = int(round(s * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def duration_to_seconds(d: Duration) -> float:
    return d.sec + d.nanosec * 1e-9


# --------------------------------------------------------------------------- images
class MessageError(ValueError):
    """A message that cannot be used; the node logs it and keeps running."""


def image_to_msg(img: np.ndarray, stamp: Time, frame_id: str = "camera") -> Image:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise MessageError(f"expected uint8 HxWx3 image, got {img.dtype} {img.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(img).tobytes()
    return msg


def msg_to_image(msg: Image, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an rgb8/bgr8 Image into an RGB uint8 array; raise MessageError on anything else."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise MessageError(f"unsupported image encoding {msg.encoding!r} (expected rgb8 or bgr8)")
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise MessageError(f"empty image {w}x{h}")
    step = int(msg.step) if msg.step else w * 3
    if step < w * 3 or len(msg.data) < step * h:
        raise MessageError(f"image data too short: {len(msg.data)} bytes for {w}x{h} step {step}")
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)[: step * h].reshape(h, step)
    img = buf[:, : w * 3].reshape(h, w, 3)
    if msg.encoding == "bgr8":
        img = img[:, :, ::-1]
    if expect_hw is not None and (h, w) != tuple(expect_hw):
        raise MessageError(f"image is {w}x{h}, expected {expect_hw[1]}x{expect_hw[0]}")
    return np.ascontiguousarray(img)


# --------------------------------------------------------------------------- joints
def joint_state_msg(
    q: np.ndarray, dq: np.ndarray | None, stamp: Time, robot: RobotSpec = PANDA, frame_id: str = ""
) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.name = list(robot.joint_names)
    msg.position = [float(v) for v in q]
    if dq is not None:
        msg.velocity = [float(v) for v in dq]
    return msg


def joint_state_to_array(msg: JointState, robot: RobotSpec = PANDA) -> np.ndarray:
    try:
        return robot.order(msg.name, msg.position)
    except JointLayoutError as e:
        raise MessageError(f"bad JointState: {e}") from e


def chunk_msg(
    chunk: np.ndarray,
    stamp: Time,
    control_rate: float,
    robot: RobotSpec = PANDA,
    policy_version: int | None = None,
) -> JointTrajectory:
    """(H, dof) array -> JointTrajectory; point i at time_from_start (i+1)/control_rate."""
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim != 2 or chunk.shape[1] != robot.dof:
        raise MessageError(f"chunk must be (H, {robot.dof}), got {chunk.shape}")
    if not np.all(np.isfinite(chunk)):
        raise MessageError("chunk contains NaN/Inf; not publishing")
    msg = JointTrajectory()
    msg.header.stamp = stamp
    if policy_version is not None:
        msg.header.frame_id = f"policy_version={int(policy_version)}"
    msg.joint_names = list(robot.joint_names)
    for i, row in enumerate(chunk):
        pt = JointTrajectoryPoint()
        pt.positions = [float(v) for v in row]
        pt.time_from_start = seconds_to_duration((i + 1) / control_rate)
        msg.points.append(pt)
    return msg


def chunk_from_msg(msg: JointTrajectory, robot: RobotSpec = PANDA) -> np.ndarray:
    """JointTrajectory -> (H, dof) array in the robot's joint order. Raises MessageError."""
    if not msg.points:
        raise MessageError("trajectory has no points")
    names = list(msg.joint_names)
    rows = []
    for i, pt in enumerate(msg.points):
        if len(pt.positions) != len(names):
            raise MessageError(
                f"point {i} has {len(pt.positions)} positions for {len(names)} joint names"
            )
        try:
            rows.append(robot.order(names, pt.positions, allow_extra=False))
        except JointLayoutError as e:
            raise MessageError(f"bad trajectory: {e}") from e
    return np.stack(rows)


def poses_from_msg(msg: PoseArray) -> dict:
    """``/sim/object_poses`` -> ``{name: (position (3,), quaternion xyzw (4,))}``; the names are
    the comma-separated ``header.frame_id``."""
    names = [n for n in (msg.header.frame_id or "").split(",") if n]
    if len(names) != len(msg.poses):
        raise MessageError(f"PoseArray has {len(msg.poses)} poses but {len(names)} names")
    out = {}
    for name, p in zip(names, msg.poses):
        out[name] = (
            np.array([p.position.x, p.position.y, p.position.z]),
            np.array([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]),
        )
    return out


def policy_version_of(msg: JointTrajectory) -> int:
    fid = msg.header.frame_id or ""
    if fid.startswith("policy_version="):
        try:
            return int(fid.split("=", 1)[1])
        except ValueError:
            return -1
    return 0


def json_msg(payload: dict) -> String:
    return String(data=json.dumps(payload, sort_keys=True))


# --------------------------------------------------------------------------- parameters
def declare_config(node, cls, exclude=(), validate: bool = True):
    """Declare every field of the node's config dataclass ``cls`` (``core/node_config.py``; but
    ``exclude``) as a ROS parameter with its default and help, and return ``cls`` built from the
    values given (graph YAML / ``--ros-args``), coerced to the field types and validated."""
    from rcl_interfaces.msg import ParameterDescriptor

    from vla_rl_ros.core.config import from_params, param_defaults, param_help

    helps = param_help(cls)
    values = {}
    for name, default in param_defaults(cls, exclude):
        # dynamic typing: an int given for a float field (``real_time_factor: 2``) is coerced by the
        # dataclass's type instead of refused by rclpy
        desc = ParameterDescriptor(description=helps[name], dynamic_typing=True)
        values[name] = node.declare_parameter(name, default, desc).value
    return from_params(cls, values, validate)


# --------------------------------------------------------------------------- lifecycle
def stopping_now(context=None, within: float = STOP_RACE_S, poll: float = 0.01) -> bool:
    """Whether ``context`` (default: rclpy's) is shut down, or goes down within ``within``
    seconds (a stop signal that rclpy is still handling)."""
    import time

    deadline = time.monotonic() + within
    while rclpy.ok(context=context):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now to the collector's permanent generation
    (``gc.freeze``): a full collection otherwise walks the ~500,000 objects that torch, the
    sentence encoder and lerobot leave behind, 260 ms with the GIL held (measured in a policy
    node's process) -- 5 control ticks at 20 Hz, whenever Python decides to run one. After the
    freeze a collection walks only what was made since (a hot-swapped checkpoint's objects, which
    ``HotSwapper.release_evicted`` still collects). Objects of the start-up heap that later become
    cyclic garbage are not collected (the start-up checkpoint's module graph, once two swaps have
    evicted it): a bounded, one-time cost."""
    gc.collect()
    gc.freeze()


def spin_node(node_factory, args=None, executor=None, exit_process: bool = True) -> int:
    """Create the node, spin until Ctrl-C / SIGTERM, shut down in order, end the process.

    rclpy's own signal handlers (SIGINT and SIGTERM) shut the context down, which ends the spin;
    then the node's ``shutdown()`` (its threads, its writer), the executor, the node and the
    context are closed in that order. Started by the graph runner, the node also stops when the
    runner is gone (``vla_rl_ros.lifetime.watch_parent``). With ``exit_process`` (a node's
    ``main``) the process then ends through ``vla_rl_ros.lifetime.exit_process`` (atexit
    handlers, flushed output, no interpreter finalization: ~1 s less with torch imported, and no
    abort from a native thread at teardown); otherwise the exit code is returned.
    """
    # (again, for a node started by hand) before rclpy chains its handlers to it
    note_node_stop_signals(obey_ignored=bool(os.environ.get(PARENT_PID_ENV)))
    node = None
    code = 0
    try:
        rclpy.init(args=args if args is not None else sys.argv)
        watch_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))  # -> rclpy's handler: the same graceful stop
        node = node_factory()
        freeze_startup_heap()  # everything the node loaded at start-up: out of the collector's way
        if executor is None:
            executor = SingleThreadedExecutor()
        executor.add_node(node)
        if not NODE_STOP.is_set():  # a stop that arrived while the node was starting (and was swallowed)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # a node that cannot start says why, once, and exits non-zero
        if NODE_STOP.is_set() or stopping_now():  # a callback (or the constructor) was running when the stop came
            print(f"[stop] ignored while stopping: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        else:
            print(f"[fatal] {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            code = 1
    finally:
        if node is not None:
            try:
                node.shutdown() if hasattr(node, "shutdown") else None
            except Exception as e:  # pragma: no cover - best effort
                print(f"[shutdown] {e}", file=sys.stderr, flush=True)
        if executor is not None:
            try:
                executor.shutdown(timeout_sec=STOP_EXECUTOR_TIMEOUT_S)
            except Exception:  # pragma: no cover - best effort
                pass
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if exit_process:
        end_process(code)
    return code


# --------------------------------------------------------------------------- /diagnostics
class Diagnostics:
    """One ``diagnostic_msgs/DiagnosticStatus`` on ``/diagnostics`` (what rqt_robot_monitor and the
    diagnostic aggregator read). ``diagnostic_msgs`` is import-gated: without it ``publish`` does
    nothing and ``available`` is False (the same figures are on the node's JSON status)."""

    LEVELS = {"ok": 0, "warn": 1, "error": 2, "stale": 3}

    def __init__(self, node, name: str):
        self.node, self.name = node, name
        try:
            from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        except ImportError:
            self.available = False
            node.get_logger().warning("diagnostic_msgs is not installed: no /diagnostics (pip install "
                                      "ros-diagnostic-msgs)")
            return
        self.available = True
        self._types = (DiagnosticArray, DiagnosticStatus, KeyValue)
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def publish(self, level: str, message: str, values: dict) -> None:
        if not self.available:
            return
        DiagnosticArray, DiagnosticStatus, KeyValue = self._types
        st = DiagnosticStatus(level=bytes([self.LEVELS[level]]), name=self.name, message=message[:256],
                              hardware_id=self.node.get_fully_qualified_name())
        st.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(arr)
