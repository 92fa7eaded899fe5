"""Real-robot episodes (issue 20, item 6): the robot graph's episode_manager and trajectory_logger
(pairing ticks) record operator-labelled episodes of the policy driving a stand-in ros2_control
arm into a LeRobot dataset that a fresh process loads: a success, a re-recorded (discarded)
attempt and a failure give two episodes with the operator's labels, a frame per control tick."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.ros.test_collect_replay import LOAD_SCRIPT
from tests.ros.test_robot_graph import _clip
from vla_rl_ros.graph import NodeSpec


@pytest.mark.timeout(400)
def test_operator_labelled_real_episodes_reach_a_lerobot_dataset(probe, start_nodes, tmp_path):
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from vla_rl_ros.graph import load_graph
    from vla_rl_ros.nodes.common import LATCHED_QOS

    out = tmp_path / "real_ds"
    g = load_graph("robot", {"profile": "fr3", "camera_source": str(_clip(tmp_path / "cam.avi")), "camera_rate": 15.0,
                             "backend": "onnxruntime", "out": str(out), "instruction": "pick up the red cube"})
    specs = {n.name: n for n in g.nodes}
    assert specs["trajectory_logger"].parameters["pairing"] == "ticks"
    specs["episode_manager"].parameters["keyboard"] = False
    probe.collect(String, "/vla/logger/status", LATCHED_QOS)
    probe.collect(String, "/vla/safety/status", LATCHED_QOS)
    probe.collect(String, "/vla/episode_manager/status", LATCHED_QOS)
    logger = lambda: probe.latest_json("/vla/logger/status") or {}  # noqa: E731
    manager = lambda: probe.latest_json("/vla/episode_manager/status") or {}  # noqa: E731
    runner = start_nodes(NodeSpec("mock_arm_node", "mock_arm_node", {"profile": "fr3"}), *g.nodes, name="robot")
    trigger = lambda name: probe.call(Trigger, f"/episode_manager/{name}", Trigger.Request())  # noqa: E731
    label = lambda ok: probe.call(SetBool, "/episode_manager/label", SetBool.Request(data=ok))  # noqa: E731
    try:
        assert probe.wait_for(lambda: (probe.latest_json("/vla/safety/status") or {}).get("dry_run", 0) >= 5, 180), (
            runner.tail("policy_node"), runner.tail("safety_node"))
        assert probe.call(SetBool, "/vla/safety/enable", SetBool.Request(data=True)).success
        assert not label(True).success  # nothing to label yet
        for outcome in (True, "rerecord", False):
            r = trigger("start")
            assert r.success, r.message
            assert not trigger("start").success  # one episode at a time
            time.sleep(2.0)
            if outcome == "rerecord":
                assert trigger("rerecord").success
            else:
                assert label(outcome).success
        assert probe.wait_for(lambda: logger().get("saved") == 2, 120), (logger(), runner.tail("trajectory_logger"))
        assert logger()["discarded"] == 1 and logger()["bad_messages"] == 0, logger()
        assert manager()["success"] == 1 and manager()["failure"] == 1 and manager()["discarded"] == 1, manager()
    finally:
        runner.stop(timeout=30)
    loaded = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(out)], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    d = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert d["episodes"] == 2, d
    assert [e["success"] for e in d["per_episode"]] == [True, False], d
    for e in d["per_episode"]:
        assert e["task"] == "pick up the red cube" and e["done_last"], e
        assert 12 <= e["length"] <= 26, e  # ~2 s at 10 Hz, a frame per control tick
    import numpy as np

    from vla_rl_ros.core.data.reader import iter_episode_frames

    for _, fr in iter_episode_frames(str(out), keys=["rl.chunk_index", "action", "observation.state"]):
        idx = np.asarray(fr["rl.chunk_index"]).reshape(-1)
        assert np.mean(idx >= 0) > 0.5, idx  # the policy's target for the tick, not a hold
        assert np.all(np.isfinite(np.asarray(fr["action"]))) and np.asarray(fr["observation.state"]).shape[1] == 8


@pytest.mark.timeout(400)
def test_explored_real_episodes_log_mu_sigma_and_the_exact_log_prob(probe, start_nodes, tmp_path):
    """exploration: explore on the robot graph: exploration_node sits between the policy and the
    safety layer, the arm is commanded a = μ + ε, and every frame of the recorded episode carries
    μ, σ and log π(a) of the point the arm was sent, recomputable from the frame."""
    import numpy as np
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from vla_rl_ros.core.data.reader import iter_episode_frames
    from vla_rl_ros.core.recording import step_log_prob
    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.graph import load_graph
    from vla_rl_ros.nodes.common import LATCHED_QOS

    out = tmp_path / "explored_ds"
    g = load_graph("robot", {"profile": "panda", "camera_source": str(_clip(tmp_path / "cam.avi")),
                             "camera_rate": 15.0, "backend": "onnxruntime", "out": str(out),
                             "instruction": "pick up the red cube", "exploration": "explore",
                             "temporal_ensemble": False, "explore_seed": 3})
    specs = {n.name: n for n in g.nodes}
    assert specs["safety_node"].parameters["chunk_topic"] == specs["exploration_node"].parameters["controller_topic"]
    specs["episode_manager"].parameters["keyboard"] = False
    probe.collect(String, "/vla/logger/status", LATCHED_QOS)
    probe.collect(String, "/vla/safety/status", LATCHED_QOS)
    probe.collect(String, "/mock_arm/status", LATCHED_QOS)
    runner = start_nodes(NodeSpec("mock_arm_node", "mock_arm_node", {"profile": "panda"}), *g.nodes, name="robot")
    try:
        assert probe.wait_for(lambda: (probe.latest_json("/vla/safety/status") or {}).get("dry_run", 0) >= 5, 180), (
            runner.tail("exploration_node"), runner.tail("safety_node"))
        assert probe.call(SetBool, "/vla/safety/enable", SetBool.Request(data=True)).success
        assert probe.call(Trigger, "/episode_manager/start", Trigger.Request()).success
        time.sleep(3.0)
        assert probe.call(SetBool, "/episode_manager/label", SetBool.Request(data=True)).success
        assert probe.wait_for(lambda: (probe.latest_json("/vla/logger/status") or {}).get("saved") == 1, 120), (
            probe.latest_json("/vla/logger/status"), runner.tail("trajectory_logger"))
        arm = probe.latest_json("/mock_arm/status") or {}
        assert arm.get("accepted", 0) >= 10 and not arm.get("rejected"), arm
        st = probe.latest_json("/vla/logger/status")
        assert st["anchored"] >= 10 and st["anchored"] >= 0.9 * (st["anchored"] + st["unanchored"]), st
    finally:
        runner.stop(timeout=30)
    (_, fr), = list(iter_episode_frames(str(out), keys=["action", "rl.action_mean", "rl.sigma", "rl.log_prob",
                                                         "rl.chunk_index"]))
    idx = np.asarray(fr["rl.chunk_index"]).reshape(-1)
    sent = idx >= 0
    assert sent.mean() > 0.5, idx
    a, mu, sig = (np.asarray(fr[k], dtype=np.float64) for k in ("action", "rl.action_mean", "rl.sigma"))
    lp = np.asarray(fr["rl.log_prob"], dtype=np.float64).reshape(-1)
    assert np.allclose(sig[sent, :7], 0.01) and np.all(sig[sent, 7] == 0), sig[sent][:3]
    noise = (a - mu)[sent, :7]
    assert 0.005 < noise.std() < 0.02, noise.std()  # the arm was sent μ + ε, not μ
    assert np.all(a[sent, 7] == mu[sent, 7])  # the gripper executes μ (gripper_sigma 0)
    for i in np.flatnonzero(sent):
        ref = step_log_prob(a[i], mu[i], sig[i], PANDA.lower, PANDA.upper)
        assert np.isfinite(lp[i]) and abs(lp[i] - ref) < 1e-3, (i, lp[i], ref)
    # the update's ratio starts at 1: each decision's anchor frame holds the observation its chunk
    # was computed from (without the anchors: median log-ratio 1.4 nats)
    rl = subprocess.run([sys.executable, "-m", "vla_rl_ros.cli", "train-rl", "--data", str(out), "--init",
                         "models/vla_bc_v4", "--out", str(tmp_path / "rl"), "--epochs", "1", "--no-export-onnx"],
                        capture_output=True, text=True, timeout=300)
    assert rl.returncode == 0, rl.stderr[-3000:]
    fit = json.loads((tmp_path / "rl" / "checkpoint" / "config.json").read_text())
    assert fit["meta"]["init_log_ratio_median"] < 0.05, fit["meta"]
