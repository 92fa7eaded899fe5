"""The simulated arm through real rclpy processes: topic rates, commands move the arm, bad
commands are refused while the node keeps running."""

import time

import numpy as np

from vla_rl_ros.graph import NodeSpec


def _sim(start_nodes, **params):
    base = {"control_rate": 10.0, "family": "pick", "seed": 3, "episodes": 0, "max_steps": 400,
            "image_width": 64, "image_height": 64, "start_delay": 0.5}
    base.update(params)
    return start_nodes(NodeSpec("sim_node", "sim_node", base, required=True))


def _subscribe_all(probe):
    from geometry_msgs.msg import Vector3Stamped
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS

    probe.collect(JointState, "/joint_states", RELIABLE_QOS)
    probe.collect(Image, "/camera/image_raw", SENSOR_QOS)
    probe.collect(Vector3Stamped, "/vla/reward", RELIABLE_QOS)
    probe.collect(String, "/vla/instruction", LATCHED_QOS)
    probe.collect(JointState, "/joint_trajectory_controller/reference", RELIABLE_QOS)


RATE_WINDOW = 50  # messages: 5 s at the sim's 10 Hz


def _rate(msgs, n=RATE_WINDOW):
    """Messages per second over the last n, by their header stamps (taken in the sim's tick): the
    node's own rate, free of the probe's delivery jitter."""
    from vla_rl_ros.nodes.common import stamp_to_ns

    stamps = sorted(stamp_to_ns(m.header.stamp) for _, m in msgs[-n:])
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) * 1e-9)


def test_topic_rates_and_contents(probe, start_nodes):
    from vla_rl_ros.nodes.common import joint_state_to_array, msg_to_image, stamp_to_ns

    _subscribe_all(probe)
    runner = _sim(start_nodes)
    assert probe.wait_for(lambda: len(probe.msgs("/joint_states")) >= RATE_WINDOW + 5, 90), runner.tail("sim_node")
    # Bounds at the 10 Hz control rate, over 5 s. Upper, 10.5: the tick timer never fires early
    # and skips, never bunches, the periods it misses, so only a late first stamp of the window
    # (< one period) can raise the rate, by at most 1/49. Lower, 8: a wrong period (5 Hz, 20 Hz)
    # fails, while a loaded 2-core machine may make the timer skip up to one tick in five (and a
    # best-effort image be lost).
    for topic in ("/joint_states", "/camera/image_raw", "/vla/reward"):
        assert 8.0 < _rate(probe.msgs(topic)) <= 10.5, (topic, _rate(probe.msgs(topic)))
    instr = probe.msgs("/vla/instruction")
    assert instr and instr[-1][1].data.startswith("pick up the")
    js = probe.msgs("/joint_states")[-1][1]
    q = joint_state_to_array(js)
    assert q.shape == (8,)
    img = msg_to_image(probe.msgs("/camera/image_raw")[-1][1], (64, 64))
    assert img.std() > 5  # a real rendered scene, not a blank frame
    # observation stamps are shared between joint states and images of one tick
    js_stamps = {stamp_to_ns(m.header.stamp) for _, m in probe.msgs("/joint_states")}
    img_stamps = {stamp_to_ns(m.header.stamp) for _, m in probe.msgs("/camera/image_raw")}
    assert len(js_stamps & img_stamps) >= 25


def test_trajectory_command_moves_the_arm_and_bad_ones_are_refused(probe, start_nodes):
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import RELIABLE_QOS, chunk_msg, joint_state_to_array, ns_to_stamp

    _subscribe_all(probe)
    runner = _sim(start_nodes)
    pub = probe.node.create_publisher(JointTrajectory, "/joint_trajectory_controller/joint_trajectory", RELIABLE_QOS)
    assert probe.wait_for(lambda: len(probe.msgs("/joint_states")) >= 5, 60), runner.tail("sim_node")
    q0 = joint_state_to_array(probe.msgs("/joint_states")[-1][1])

    def send(msg, settle=1.5):
        pub.publish(msg)
        time.sleep(settle)
        return joint_state_to_array(probe.msgs("/joint_states")[-1][1])

    # bad commands: unknown joint names, wrong number of positions, beyond limits -> arm stays
    bad_names = chunk_msg(q0[None], ns_to_stamp(0), 10.0)
    bad_names.joint_names = [n.replace("panda", "ur5") for n in bad_names.joint_names]
    bad_names.points[0].positions = list(q0 + 0.3)
    wrong_len = chunk_msg(q0[None] + 0.3, ns_to_stamp(0), 10.0)
    wrong_len.points[0].positions = wrong_len.points[0].positions[:5]
    beyond = q0.copy()
    beyond[3] = 1.0  # joint 4 must be <= 0
    for msg in (bad_names, wrong_len, chunk_msg(beyond[None], ns_to_stamp(0), 10.0)):
        q = send(msg, settle=0.8)
        assert np.abs(q[:7] - q0[:7]).max() < 0.02
    assert not runner.dead()
    log = runner.tail("sim_node", 40)
    assert "missing joints" in log and "ur5_joint1" in log and "positions for 8 joint names" in log and "beyond joint limits" in log

    # a valid command (stamp 0 = start now): joint 1 turns by 0.4 rad and stays there
    target = q0.copy()
    target[0] += 0.4
    steps = np.linspace(q0, target, 10)
    q = send(chunk_msg(steps, ns_to_stamp(0), 10.0), settle=2.5)
    assert abs(q[0] - target[0]) < 0.03, (q, target)
    assert np.abs(q[1:7] - q0[1:7]).max() < 0.05
    refs = [m.header.frame_id for _, m in probe.msgs("/joint_trajectory_controller/reference")]
    assert any(r.endswith(":hold") for r in refs) and any(":" in r and not r.endswith("hold") for r in refs)
    assert PANDA.within_limits(q)


def test_first_episode_waits_for_every_listed_publisher(probe, start_nodes):
    """wait_for_publisher lists topics: episode 0 starts only once all of them have a publisher
    (the collect graph waits for the expert and the logger)."""
    from std_msgs.msg import String

    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    probe.collect(String, "/vla/instruction", LATCHED_QOS)
    runner = _sim(start_nodes, wait_for_publisher="/test/a, /test/b", start_delay=0.2)
    pub_a = probe.node.create_publisher(String, "/test/a", RELIABLE_QOS)
    assert probe.wait_for(lambda: "waiting for a publisher on" in runner.tail("sim_node"), 60), runner.tail("sim_node")
    time.sleep(2.5)  # 12 start_delays: /test/a is discovered, /test/b still has no publisher
    assert not probe.msgs("/vla/instruction"), "episode 0 started with /test/b still missing"
    pub_b = probe.node.create_publisher(String, "/test/b", RELIABLE_QOS)
    assert probe.wait_for(lambda: probe.msgs("/vla/instruction"), 60), runner.tail("sim_node")
    assert "/test/a, /test/b up after" in runner.tail("sim_node", 200)
    del pub_a, pub_b
