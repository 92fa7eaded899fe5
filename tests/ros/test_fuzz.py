"""Fuzzing every subscribed message type of the recording graph (issue 19): for several seconds a
seeded random publisher sends malformed and hostile messages on every topic the explore graph's
nodes subscribe to — images of impossible sizes, steps and encodings, joint states with NaN / Inf /
1e9 / unknown or missing joints, pose arrays and rewards with NaN, trajectories with wrong names,
lengths and values, strings that are empty, huge, binary, broken or wrongly-typed JSON, weights
paths outside the allowed folders. Afterwards every node is still alive, the policy acts on a
valid instruction again, and every episode the logger saved loads in LeRobotDataset."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

FUZZ_SECONDS = 8.0
SEED = 1234
BAD = (float("nan"), float("inf"), -float("inf"), 1e9, -1e9, 0.0)
COUNT = """
import json, sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/vla_rl_ros", root=sys.argv[1])
assert len(ds) == ds.meta.total_frames
print(json.dumps({"episodes": ds.meta.total_episodes}))
"""


def _value(rng):
    return float(rng.choice(BAD)) if rng.random() < 0.5 else float(rng.normal(0, 3))


def _string(rng) -> str:
    kind = rng.integers(0, 9)
    return [
        "", "{not json", json.dumps({"path": 3}), json.dumps({"event": 7, "episode": "x"}), "\x00\xff" * 10,
        "x" * int(rng.integers(1000, 200_000)), "/etc", "/nonexistent/checkpoint",
        "".join(chr(int(c)) for c in rng.integers(32, 0x2FFF, int(rng.integers(1, 80)))),
    ][kind]


def _names(rng):
    real = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"]
    n = int(rng.integers(0, 12))
    return [str(rng.choice(real)) if rng.random() < 0.6 else f"junk_{int(rng.integers(99))}" for _ in range(n)]


def _image(rng):
    from sensor_msgs.msg import Image

    m = Image()
    m.height, m.width = (int(rng.choice([0, 1, 2, 96, 3000])), int(rng.choice([0, 1, 3, 96, 4000])))
    m.encoding = str(rng.choice(["rgb8", "bgr8", "mono16", "32FC1", "yuv422", "", "junk"]))
    m.step = int(rng.integers(0, 20_000))
    m.data = rng.integers(0, 256, int(rng.choice([0, 10, 27_648, 30_000])), dtype=np.uint8).tobytes()
    m.header.stamp.sec = int(rng.integers(0, 2**31 - 1))
    return m


def _joint_state(rng):
    from sensor_msgs.msg import JointState

    m = JointState()
    m.name = _names(rng)
    m.position = [_value(rng) for _ in range(int(rng.integers(0, 12)))]
    m.velocity = [_value(rng) for _ in range(int(rng.integers(0, 3)))]
    m.header.stamp.sec = int(rng.integers(0, 2**31 - 1))
    return m


def _poses(rng):
    from geometry_msgs.msg import Pose, PoseArray

    m = PoseArray()
    for _ in range(int(rng.integers(0, 9))):
        p = Pose()
        p.position.x, p.position.y, p.position.z = _value(rng), _value(rng), _value(rng)
        p.orientation.w = _value(rng)
        m.poses.append(p)
    return m


def _vector(rng):
    from geometry_msgs.msg import Vector3Stamped

    m = Vector3Stamped()
    m.vector.x, m.vector.y, m.vector.z = _value(rng), _value(rng), _value(rng)
    return m


def _trajectory(rng):
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    m = JointTrajectory()
    m.joint_names = _names(rng)
    for i in range(int(rng.integers(0, 10))):
        p = JointTrajectoryPoint()
        p.positions = [_value(rng) for _ in range(int(rng.integers(0, 10)))]
        p.time_from_start = Duration(sec=int(rng.integers(0, 5)), nanosec=int(rng.integers(0, 999_999_999)))
        m.points.append(p)
    m.header.stamp.sec = int(rng.integers(0, 2**31 - 1))
    return m


def _string_msg(rng):
    from std_msgs.msg import String

    return String(data=_string(rng))


@pytest.mark.timeout(600)
def test_fuzzing_every_subscribed_topic_stops_no_node_and_loses_no_saved_episode(domain_id, tmp_path):
    from geometry_msgs.msg import PoseArray, Vector3Stamped
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.paths import DEFAULT_CHECKPOINT
    from vla_rl_ros.core.policy.checkpoint import read_config
    from vla_rl_ros.graph import GraphRunner, load_graph
    from vla_rl_ros.nodes.background import BackgroundNode
    from vla_rl_ros.nodes.common import (
        ACTION_CHUNK_TOPIC, CONTROLLER_TOPIC, EPISODE_TOPIC, INSTRUCTION_TOPIC, JOINT_STATES_TOPIC, LATCHED_QOS,
        LOGGER_STATUS_TOPIC, OBJECT_POSES_TOPIC, POLICY_STATUS_TOPIC, POLICY_WEIGHTS_TOPIC, REFERENCE_TOPIC,
        RELIABLE_QOS, REWARD_TOPIC, SIGMA_TOPIC, camera_topic,
    )

    size = int(read_config(str(DEFAULT_CHECKPOINT))["policy"]["image_size"])
    out = tmp_path / "ds"
    g = load_graph("explore", {"out": str(out), "episodes": 0, "real_time_factor": 2.0, "family": "push",
                               "image_width": size, "image_height": size, "max_steps": 60, "backend": "onnxruntime"})
    probe = BackgroundNode("fuzzer", domain_id)
    probe.collect(String, LOGGER_STATUS_TOPIC, LATCHED_QOS)
    probe.collect(String, POLICY_STATUS_TOPIC, LATCHED_QOS)
    probe.collect(JointTrajectory, ACTION_CHUNK_TOPIC, RELIABLE_QOS)
    runner = GraphRunner(g, log_dir=str(tmp_path / "logs"), domain_id=domain_id).start()
    status = lambda topic: json.loads(probe.msgs(topic)[-1][1].data) if probe.msgs(topic) else {}  # noqa: E731
    try:
        assert probe.wait_for(lambda: status(LOGGER_STATUS_TOPIC).get("saved", 0) >= 1, 300), runner.tail("trajectory_logger")
        targets = [(Image, camera_topic("front", 0), _image), (JointState, JOINT_STATES_TOPIC, _joint_state),
                   (JointState, REFERENCE_TOPIC, _joint_state), (PoseArray, OBJECT_POSES_TOPIC, _poses),
                   (Vector3Stamped, REWARD_TOPIC, _vector), (String, EPISODE_TOPIC, _string_msg),
                   (String, INSTRUCTION_TOPIC, _string_msg), (String, POLICY_STATUS_TOPIC, _string_msg),
                   (String, POLICY_WEIGHTS_TOPIC, _string_msg), (JointTrajectory, CONTROLLER_TOPIC, _trajectory),
                   (JointTrajectory, ACTION_CHUNK_TOPIC, _trajectory), (JointTrajectory, SIGMA_TOPIC, _trajectory)]
        pubs = [(probe.node.create_publisher(t, topic, RELIABLE_QOS), make) for t, topic, make in targets]
        rng = np.random.default_rng(SEED)
        sent, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < FUZZ_SECONDS:
            pub, make = pubs[int(rng.integers(len(pubs)))]
            pub.publish(make(rng))
            sent += 1
            time.sleep(0.005)
        assert sent > 500
        time.sleep(1.0)
        assert runner.dead() == {}, {n: runner.tail(n) for n in runner.dead()}
        # a valid instruction: the policy understands and commands again
        ipub = probe.node.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        ipub.publish(String(data="push the red cube to the left"))
        n0 = len(probe.msgs(ACTION_CHUNK_TOPIC))
        assert probe.wait_for(lambda: len(probe.msgs(ACTION_CHUNK_TOPIC)) > n0 + 3, 10), runner.tail("policy_node")
        pol = status(POLICY_STATUS_TOPIC)
        print(f"\nfuzzed {sent} messages in {FUZZ_SECONDS:.0f} s; policy rejected_input {pol.get('rejected_input')}, "
              f"logger {status(LOGGER_STATUS_TOPIC)}")
        assert pol.get("rejected_input", 0) > 0
        assert runner.dead() == {}, {n: runner.tail(n) for n in runner.dead()}
        saved = status(LOGGER_STATUS_TOPIC).get("saved", 0)
    finally:
        runner.stop(timeout=30)
        probe.close()
    r = subprocess.run([sys.executable, "-c", COUNT, str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["episodes"] >= saved >= 1
