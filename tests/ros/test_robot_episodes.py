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
