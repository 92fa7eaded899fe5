"""A camera or the joint states falling silent and coming back (issue 19): the policy stops
commanding at once (the controller holds the last target), says which input is missing and why
it holds, and commands again within a second of the input's return — no restart, nothing stuck."""

from __future__ import annotations

import json
import threading
import time

import numpy as np

from tests.ros.test_policy_node import small_ckpt  # noqa: F401  (fixture)
from vla_rl_ros.graph import NodeSpec


def test_camera_and_joint_states_stop_and_return(small_ckpt, probe, start_nodes):  # noqa: F811
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import (
        LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, image_to_msg, joint_state_msg, ns_to_stamp,
    )

    probe.collect(JointTrajectory, "/vla/action_chunk", RELIABLE_QOS)
    probe.collect(String, "/vla/policy/status", LATCHED_QOS)
    runner = start_nodes(NodeSpec("policy_node", "policy_node", {
        "checkpoint": str(small_ckpt), "backend": "onnxruntime", "control_rate": 10.0, "input_timeout_s": 0.5},
        required=True))
    pub_img = probe.node.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
    pub_js = probe.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    pub_ins = probe.node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
    assert probe.wait_for(lambda: probe.msgs("/vla/policy/status"), 90), runner.tail("policy_node")
    status = lambda: probe.latest_json("/vla/policy/status") or {}  # noqa: E731
    chunks = lambda: len(probe.msgs("/vla/action_chunk"))  # noqa: E731
    pub_ins.publish(String(data="pick up the red cube"))
    on = {"camera": True, "state": True}
    stop = threading.Event()
    rng = np.random.default_rng(0)

    def stream():  # a camera and an arm at 10 Hz, each switchable
        while not stop.is_set():
            st = ns_to_stamp(time.time_ns())
            if on["state"]:
                pub_js.publish(joint_state_msg(PANDA.home, None, st))
            if on["camera"]:
                pub_img.publish(image_to_msg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), st))
            time.sleep(0.1)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        assert probe.wait_for(lambda: chunks() > 10, 60), runner.tail("policy_node")
        assert probe.wait_for(lambda: status().get("missing_inputs") == [] and status().get("hold") is None, 10), status()
        for name, key in (("front", "camera"), ("joint_states", "state")):
            on[key] = False
            time.sleep(0.5)
            n0 = chunks()
            time.sleep(1.5)
            assert chunks() - n0 <= 1, f"the policy kept commanding without {name}"
            assert probe.wait_for(lambda: status().get("missing_inputs") == [name], 5), status()
            assert name in (status().get("hold") or "") and status()["stalled"] is False, status()
            assert status()["input_age_s"][name] > 0.5
            on[key] = True
            t0, n1 = time.monotonic(), chunks()
            assert probe.wait_for(lambda: chunks() > n1, 5), runner.tail("policy_node")
            print(f"\n{name} back: first chunk after {1e3 * (time.monotonic() - t0):.0f} ms")
            assert time.monotonic() - t0 < 1.0
            assert probe.wait_for(lambda: status().get("missing_inputs") == [] and status().get("hold") is None, 5)
        assert runner.dead() == {}
        assert "no front for more than 0.5 s" in runner.tail("policy_node", 200)
    finally:
        stop.set()
        t.join(2)


def test_clock_jumps_in_the_observation_stamps(small_ckpt, probe, start_nodes):  # noqa: F811
    """The stamps of camera and joint states jump (a clock stepped by NTP, a restarted driver):
    1 hour forward, then 2 hours back. The policy keeps answering every observation with a chunk
    stamped like it (temporal ensembling, counted by stamps, starts over instead of mixing plans
    an hour apart), and nothing is refused or stalls."""
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import (
        LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, image_to_msg, joint_state_msg, ns_to_stamp, stamp_to_ns,
    )

    probe.collect(JointTrajectory, "/vla/action_chunk", RELIABLE_QOS)
    probe.collect(String, "/vla/policy/status", LATCHED_QOS)
    runner = start_nodes(NodeSpec("policy_node", "policy_node", {
        "checkpoint": str(small_ckpt), "backend": "onnxruntime", "control_rate": 10.0, "temporal_ensemble": True,
        "ensemble_ticks": "stamps"}, required=True))
    pub_img = probe.node.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
    pub_js = probe.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    pub_ins = probe.node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
    assert probe.wait_for(lambda: probe.msgs("/vla/policy/status"), 90), runner.tail("policy_node")
    status = lambda: probe.latest_json("/vla/policy/status") or {}  # noqa: E731
    pub_ins.publish(String(data="pick up the red cube"))
    assert probe.wait_for(lambda: status().get("instruction") == "pick up the red cube", 20)
    rng = np.random.default_rng(1)
    answered = lambda: {stamp_to_ns(m.header.stamp) for _, m in probe.msgs("/vla/action_chunk")}  # noqa: E731
    hour = 3600 * 10**9
    for offset in (0, hour, -hour):
        sent = []
        for _ in range(15):
            ns = time.time_ns() + offset
            st = ns_to_stamp(ns)
            pub_js.publish(joint_state_msg(PANDA.home, None, st))
            pub_img.publish(image_to_msg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), st))
            sent.append(ns)
            time.sleep(0.1)
        assert probe.wait_for(lambda: len(answered() & set(sent)) >= 12, 10), (offset, status(),
                                                                                runner.tail("policy_node"))
    st = status()
    assert st["rejected_input"] == 0 and st["rejected_output"] == 0 and not st["stalled"], st
    assert runner.dead() == {}


def test_kill9_of_the_camera_node_and_its_restart(small_ckpt, probe, start_nodes, tmp_path):  # noqa: F811
    """kill -9 of camera_node (a video file standing in for the device) feeding a running
    policy_node: the policy holds and names the missing camera; a restarted camera_node is picked up
    without touching the policy (no restart, the same process), which commands again."""
    import os
    import signal

    cv2 = __import__("pytest").importorskip("cv2")
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, joint_state_msg, ns_to_stamp

    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(20):
        w.write(np.full((48, 64, 3), 10 * i, np.uint8))
    w.release()
    camera = NodeSpec("camera_node", "camera_node", {"source": str(clip), "rate": 10.0, "image_width": 32,
                                                     "image_height": 32})
    probe.collect(JointTrajectory, "/vla/action_chunk", RELIABLE_QOS)
    probe.collect(String, "/vla/policy/status", LATCHED_QOS)
    pol = start_nodes(NodeSpec("policy_node", "policy_node", {
        "checkpoint": str(small_ckpt), "backend": "onnxruntime", "control_rate": 10.0, "input_timeout_s": 0.5,
        "sync": "latest", "max_state_age": 0.2}, required=True), name="policy")
    cam = start_nodes(camera, name="camera")
    pub_js = probe.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    pub_ins = probe.node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
    status = lambda: probe.latest_json("/vla/policy/status") or {}  # noqa: E731
    chunks = lambda: len(probe.msgs("/vla/action_chunk"))  # noqa: E731
    stop = threading.Event()

    def arm():  # the arm's joint states at 20 Hz (stamped now: the camera stamps its frames now too)
        while not stop.is_set():
            pub_js.publish(joint_state_msg(PANDA.home, None, ns_to_stamp(time.time_ns())))
            time.sleep(0.05)

    t = threading.Thread(target=arm, daemon=True)
    t.start()
    try:
        assert probe.wait_for(lambda: probe.msgs("/vla/policy/status"), 90), pol.tail("policy_node")
        pub_ins.publish(String(data="pick up the red cube"))
        assert probe.wait_for(lambda: chunks() > 10, 60), json.dumps(status())
        policy_pid = pol.procs["policy_node"].pid
        os.killpg(cam.procs["camera_node"].pid, signal.SIGKILL)
        cam.procs["camera_node"].wait(timeout=10)
        time.sleep(0.5)
        n0 = chunks()
        time.sleep(1.5)
        assert chunks() - n0 <= 1
        assert probe.wait_for(lambda: status().get("missing_inputs") == ["front"], 5), status()
        cam2 = start_nodes(camera, name="camera_again")
        t0, n1 = time.monotonic(), chunks()
        assert probe.wait_for(lambda: chunks() > n1 + 5, 60), cam2.tail("camera_node")
        print(f"\ncamera restarted: commanding again {time.monotonic() - t0:.1f} s after the restart began")
        assert probe.wait_for(lambda: status().get("missing_inputs") == [], 5), status()
        assert pol.dead() == {} and pol.procs["policy_node"].pid == policy_pid
    finally:
        stop.set()
        t.join(2)


def test_images_that_never_pair_with_a_joint_state_show_as_a_stall(small_ckpt, probe, start_nodes):  # noqa: F811
    """sync exact with a camera and an arm on different clocks: every input arrives, none pairs, no
    chunk is ever sent — the status says stalled (and why not: nothing asked to hold), the log has a
    STALLED line, instead of a node that looks healthy and does nothing."""
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, image_to_msg, joint_state_msg, ns_to_stamp

    probe.collect(String, "/vla/policy/status", LATCHED_QOS)
    runner = start_nodes(NodeSpec("policy_node", "policy_node", {
        "checkpoint": str(small_ckpt), "backend": "onnxruntime", "control_rate": 10.0, "sync": "exact"}, required=True))
    pub_img = probe.node.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
    pub_js = probe.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    pub_ins = probe.node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
    assert probe.wait_for(lambda: probe.msgs("/vla/policy/status"), 90), runner.tail("policy_node")
    status = lambda: probe.latest_json("/vla/policy/status") or {}  # noqa: E731
    pub_ins.publish(String(data="pick up the red cube"))
    img = np.zeros((32, 32, 3), np.uint8)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20 and not status().get("stalled"):
        ns = time.time_ns()
        pub_js.publish(joint_state_msg(PANDA.home, None, ns_to_stamp(ns)))
        pub_img.publish(image_to_msg(img, ns_to_stamp(ns + 7_000_000)))  # 7 ms apart: never the same stamp
        time.sleep(0.1)
    st = status()
    assert st.get("stalled") is True and st["chunks"] == 0 and st["missing_inputs"] == [] and st["hold"] is None, st
    assert "STALLED" in runner.tail("policy_node", 100)


def test_a_real_cameras_compressed_frames_on_its_own_topic_are_cropped_and_resized(small_ckpt, probe, start_nodes):  # noqa: F811
    """A camera driver's topic (image_topics), JPEG CompressedImage at 640x480 (image_transport
    compressed), fitted to the checkpoint's square input (fit_images), the instruction given as a
    parameter: chunks flow; a frame that does not decode is refused and counted, and the node
    keeps commanding; the instruction parameter set at run time is followed."""
    cv2 = __import__("pytest").importorskip("cv2")
    from sensor_msgs.msg import CompressedImage, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, joint_state_msg, ns_to_stamp

    topic = "/wrist_cam/color/image_raw/compressed"
    probe.collect(JointTrajectory, "/vla/action_chunk", RELIABLE_QOS)
    probe.collect(String, "/vla/policy/status", LATCHED_QOS)
    runner = start_nodes(NodeSpec("policy_node", "policy_node", {
        "checkpoint": str(small_ckpt), "backend": "onnxruntime", "control_rate": 10.0, "image_topics": [topic],
        "image_transport": "compressed", "fit_images": True, "instruction": "pick up the red cube"}, required=True))
    pub_img = probe.node.create_publisher(CompressedImage, topic, SENSOR_QOS)
    pub_js = probe.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    status = lambda: probe.latest_json("/vla/policy/status") or {}  # noqa: E731
    chunks = lambda: len(probe.msgs("/vla/action_chunk"))  # noqa: E731
    assert probe.wait_for(lambda: probe.msgs("/vla/policy/status"), 90), runner.tail("policy_node")
    assert status().get("instruction") == "pick up the red cube", status()
    rng = np.random.default_rng(0)
    ok, jpg = cv2.imencode(".jpg", rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    stop = threading.Event()
    garbage = {"on": False}

    def stream():
        while not stop.is_set():
            st = ns_to_stamp(time.time_ns())
            pub_js.publish(joint_state_msg(PANDA.home, None, st))
            data = b"\xff\xd8 not a jpeg" if garbage["on"] else jpg.tobytes()
            pub_img.publish(CompressedImage(header=joint_state_msg(PANDA.home, None, st).header, format="jpeg",
                                            data=data))
            time.sleep(0.1)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        assert probe.wait_for(lambda: chunks() > 10, 60), (status(), runner.tail("policy_node"))
        assert status().get("rejected_input", 0) == 0, status()
        garbage["on"] = True
        assert probe.wait_for(lambda: status().get("rejected_input", 0) >= 3, 10), status()
        garbage["on"] = False
        n = chunks()
        assert probe.wait_for(lambda: chunks() > n + 5, 10), status()
        assert "does not decode" in runner.tail("policy_node", 100)
        probe.set_parameter("policy_node", "instruction", "pick up the red cube please")
        assert probe.wait_for(lambda: status().get("instruction") == "pick up the red cube please", 5), status()
    finally:
        stop.set()
        t.join(2)


def test_two_cameras_on_their_own_clocks_pair_within_the_slop(probe, start_nodes, tmp_path):
    """sync latest with a two-camera checkpoint: the cameras stamp independently (front at 10 Hz,
    wrist 30 ms later); observations form within camera_slop. A wrist camera 0.2 s behind is
    refused and said so; back within the slop, the node commands again."""
    import dataclasses

    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from tests.core.test_policy import small_model
    from vla_rl_ros.core.policy.checkpoint import save_checkpoint
    from vla_rl_ros.core.policy.model import VLAPolicy
    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import (LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, image_to_msg, joint_state_msg,
                                         ns_to_stamp)

    one = small_model()
    two = VLAPolicy(dataclasses.replace(one.cfg, cameras=("front", "wrist")), one.norm).eval()
    ckpt = save_checkpoint(two, tmp_path / "two_cams", version=1,
                           instructions={"pick up the red cube": np.ones(384, np.float32).tolist()})
    probe.collect(JointTrajectory, "/vla/action_chunk", RELIABLE_QOS)
    probe.collect(String, "/vla/policy/status", LATCHED_QOS)
    runner = start_nodes(NodeSpec("policy_node", "policy_node", {
        "checkpoint": str(ckpt), "backend": "onnxruntime", "sync": "latest", "camera_slop": 0.05,
        "instruction": "pick up the red cube"}, required=True))
    pubs = {c: probe.node.create_publisher(Image, t, SENSOR_QOS)
            for c, t in (("front", "/camera/image_raw"), ("wrist", "/camera/wrist/image_raw"))}
    pub_js = probe.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    chunks = lambda: len(probe.msgs("/vla/action_chunk"))  # noqa: E731
    lag = {"front": 0.0, "wrist": 0.03}
    stop = threading.Event()
    rng = np.random.default_rng(0)

    def stream():
        while not stop.is_set():
            now = time.time_ns()
            pub_js.publish(joint_state_msg(PANDA.home, None, ns_to_stamp(now)))
            img = lambda: rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)  # noqa: E731
            order = ("front", "wrist") if rng.random() < 0.5 else ("wrist", "front")  # either may come first
            for c in order:
                pubs[c].publish(image_to_msg(img(), ns_to_stamp(now - int(lag[c] * 1e9))))
            time.sleep(0.1)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        assert probe.wait_for(lambda: chunks() > 10, 90), runner.tail("policy_node")
        lag["wrist"] = 0.2
        time.sleep(0.5)
        n = chunks()
        time.sleep(1.0)
        assert chunks() - n <= 1, "paired frames 0.2 s apart"
        assert "camera wrist: 0.1" in runner.tail("policy_node", 50) or "camera wrist: 0.2" in runner.tail("policy_node", 50)
        lag["wrist"] = 0.01
        n = chunks()
        assert probe.wait_for(lambda: chunks() > n + 5, 10), runner.tail("policy_node")
    finally:
        stop.set()
        t.join(2)
