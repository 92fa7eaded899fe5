"""A LeRobot policy drives the simulated arm through the real graph (issue 21, item 1): sim_node +
policy_node with ``backend: lerobot`` and a tiny ACT trained here with lerobot's own code and saved
with ``save_pretrained``. Its 8-step chunks arrive on /vla/action_chunk, the simulator executes
them (the joints move, the controller's references name the chunks), and the policy's status says
which backend and that the instruction is not used; every process is stopped at the end."""

from __future__ import annotations

import numpy as np
import pytest

from tests.core.test_lerobot_policy import CHUNK, IMAGE, train_tiny_act, write_expert_dataset
from vla_rl_ros.graph import NodeSpec

CHUNKS, STATUS = "/vla/action_chunk", "/vla/policy/status"

pytestmark = pytest.mark.usefixtures("private_hf_cache")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_act_dir(tmp_path_factory, private_hf_cache):
    root = tmp_path_factory.mktemp("lerobot_graph")
    out, _ = train_tiny_act(write_expert_dataset(root / "demos"), root / "act")
    return out


def test_lerobot_act_drives_the_sim_graph(tiny_act_dir, probe, start_nodes):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import (
        LATCHED_QOS, RELIABLE_QOS, duration_to_seconds, joint_state_to_array, stamp_to_ns,
    )

    probe.collect(JointTrajectory, CHUNKS, RELIABLE_QOS)
    probe.collect(String, STATUS, LATCHED_QOS)
    probe.collect(JointState, "/joint_states", RELIABLE_QOS)
    probe.collect(JointState, "/joint_trajectory_controller/reference", RELIABLE_QOS)
    runner = start_nodes(
        NodeSpec("sim_node", "sim_node", {"control_rate": 10.0, "image_width": IMAGE, "image_height": IMAGE,
                                          "renderer": "tiny", "family": "pick", "seed": 3, "episodes": 0,
                                          "max_steps": 100000, "end_on_success": False,
                                          "wait_for_publisher": STATUS}, required=True),
        NodeSpec("policy_node", "policy_node", {
            "checkpoint": str(tiny_act_dir), "backend": "lerobot", "control_rate": 10.0, "threads": 1,
            "sync": "exact", "ensemble_ticks": "observations",
            # a 20-step ACT is no expert: its first target may be far from the arm; the guard's jump
            # check would refuse every chunk (joint limits still clip them)
            "max_first_jump": 3.5}, required=True))
    status = lambda: probe.latest_json(STATUS) or {}  # noqa: E731
    assert probe.wait_for(lambda: len(probe.msgs(CHUNKS)) >= 20, 180), \
        runner.tail("policy_node", 40) + "\n" + runner.tail("sim_node")
    assert not runner.dead(), runner.dead()

    chunks = [m for _, m in probe.msgs(CHUNKS)]
    for m in chunks:
        assert len(m.points) == CHUNK and list(m.joint_names) == list(PANDA.joint_names)
        q = np.array([p.positions for p in m.points])
        assert q.shape == (CHUNK, 8) and np.all(np.isfinite(q)) and PANDA.within_limits(q[0])
    m = chunks[-1]
    assert [round(duration_to_seconds(p.time_from_start), 3) for p in m.points] == \
        [round(0.1 * (i + 1), 3) for i in range(CHUNK)]
    assert m.header.frame_id == "policy_version=0"
    # each chunk answers one of the simulator's observations (its stamp is a joint state's stamp)
    js_stamps = {stamp_to_ns(j.header.stamp) for _, j in probe.msgs("/joint_states")}
    assert sum(stamp_to_ns(c.header.stamp) in js_stamps for c in chunks) >= len(chunks) - 2

    # the simulator executes them: its references name chunks (not "hold") and the arm moves
    refs = [r.header.frame_id for _, r in probe.msgs("/joint_trajectory_controller/reference")]
    assert sum(":" in r and not r.endswith("hold") for r in refs) >= 10, refs[-20:]
    states = np.array([joint_state_to_array(j) for _, j in probe.msgs("/joint_states")])
    assert np.abs(states[-1, :7] - states[0, :7]).max() > 0.05, (states[0], states[-1])

    assert probe.wait_for(lambda: status().get("chunks", 0) >= 20, 10), status()
    s = status()
    assert s["backend"] == "lerobot act (cpu)" and s["policy_format"] == "lerobot", s
    assert s["language"] == "none" and "not used" in s["language_reason"] and s["understood"] is True, s
    assert s["instruction"].startswith("pick up the") and s["rejected_input"] == 0, s
    assert "LeRobot act policy v0" in runner.tail("policy_node", 200)

    codes = runner.stop(timeout=20)
    assert set(codes) == {"sim_node", "policy_node"} and not [p for p in runner.procs.values() if p.poll() is None]
