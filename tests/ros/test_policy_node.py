"""policy_node as a real process: chunks stamped with their observation, bad input never acted on."""

import json
import time

import numpy as np
import pytest

from vla_rl_ros.graph import NodeSpec


@pytest.fixture
def small_ckpt(tmp_path):
    from tests.core.test_policy import small_model
    from vla_rl_ros.core.policy.checkpoint import save_checkpoint
    from vla_rl_ros.core.policy.text import InstructionEncoder

    table = {"pick up the red cube": InstructionEncoder({"pick up the red cube": np.ones(384)}).encode("pick up the red cube").tolist()}
    return save_checkpoint(small_model(), tmp_path / "ckpt", version=7, instructions=table)


def test_policy_node_answers_observations_and_refuses_bad_input(small_ckpt, probe, start_nodes):
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import (
        LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, duration_to_seconds, image_to_msg, joint_state_msg,
        ns_to_stamp, stamp_to_ns,
    )

    probe.collect(JointTrajectory, "/vla/action_chunk", RELIABLE_QOS)
    probe.collect(JointTrajectory, "/joint_trajectory_controller/joint_trajectory", RELIABLE_QOS)
    probe.collect(String, "/vla/policy/status", LATCHED_QOS)
    runner = start_nodes(NodeSpec("policy_node", "policy_node",
                                  {"checkpoint": str(small_ckpt), "backend": "torch", "control_rate": 10.0}, required=True))
    pub_img = probe.node.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
    pub_js = probe.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    pub_ins = probe.node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
    assert probe.wait_for(lambda: probe.msgs("/vla/policy/status"), 90), runner.tail("policy_node")
    pub_ins.publish(String(data="pick up the red cube"))
    time.sleep(0.5)

    rng = np.random.default_rng(0)

    def send(img_hw=(32, 32), state=None, n=10):
        stamps = []
        for _ in range(n):
            ns = time.time_ns()
            img = rng.integers(0, 255, (*img_hw, 3), dtype=np.uint8)
            q = PANDA.home if state is None else state
            msg = joint_state_msg(q, None, ns_to_stamp(ns))
            pub_js.publish(msg)
            pub_img.publish(image_to_msg(img, ns_to_stamp(ns)))
            stamps.append(ns)
            time.sleep(0.1)
        time.sleep(0.5)
        return set(stamps)

    good = send()
    chunks = probe.msgs("/vla/action_chunk")
    got = {stamp_to_ns(m.header.stamp) for _, m in chunks}
    assert len(got & good) >= 8  # (nearly) every observation answered, with its own stamp
    m = chunks[-1][1]
    assert len(m.points) == 4 and list(m.joint_names) == list(PANDA.joint_names)
    assert [round(duration_to_seconds(p.time_from_start), 3) for p in m.points] == [0.1, 0.2, 0.3, 0.4]
    assert m.header.frame_id == "policy_version=7"
    assert len(probe.msgs("/joint_trajectory_controller/joint_trajectory")) == len(chunks)  # deploy mode

    n_before = len(probe.msgs("/vla/action_chunk"))
    wrong_size = send(img_hw=(48, 48), n=5)
    nan_state = send(state=np.full(8, np.nan), n=5)
    pub_ins.publish(String(data="  "))
    time.sleep(0.3)
    empty_instr = send(n=5)
    answered = {stamp_to_ns(m.header.stamp) for _, m in probe.msgs("/vla/action_chunk")}
    assert not (answered & (wrong_size | nan_state | empty_instr))
    assert len(probe.msgs("/vla/action_chunk")) == n_before
    assert not runner.dead()
    time.sleep(1.2)
    status = json.loads(probe.msgs("/vla/policy/status")[-1][1].data)
    assert status["rejected_input"] >= 3 and status["version"] == 7
    # and it recovers once input is good again
    pub_ins.publish(String(data="pick up the red cube"))
    time.sleep(0.3)
    again = send(n=5)
    answered = {stamp_to_ns(m.header.stamp) for _, m in probe.msgs("/vla/action_chunk")}
    assert len(answered & again) >= 3
    log = runner.tail("policy_node", 60)
    assert "expects (32, 32, 3)" in log or "is 48x48" in log
