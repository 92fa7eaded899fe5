"""The robot graph against a stand-in ros2_control arm, one test per robot profile (issue 20).

``mock_arm_node`` applies a JointTrajectoryController's acceptance rules (exactly the controller's
joints, one finite position per joint per point, increasing times, no stamped trajectory ending in
the past) and counts what a safety officer would: motion before enable, after an e-stop, into
stale joint states, velocities against the limits, targets outside them. ``safety_node`` is the
only path from the policy to it. panda and fr3 run the real policy node (the shipped checkpoint and
the robot graph's own node settings, a camera_node on a video file standing in for the device;
fr3 through its joint-name mapping);
ur5e and so100, whose joints no shipped checkpoint has, get chunks in their own joint names from
``vla_rl_ros.standin.PolicyStandIn`` (a policy trained on them).
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from vla_rl_ros.graph import NodeSpec
from vla_rl_ros.standin import PolicyStandIn

MOCK_STATUS, SAFETY_STATUS = "/mock_arm/status", "/vla/safety/status"


def _clip(path, n=20):
    """A video of the simulator's front camera on a pick scene, the arm at home: what the policy
    would see at the start of an episode (random pixels make it ask for jumps the layer refuses)."""
    cv2 = pytest.importorskip("cv2")
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    world = PandaWorld(SimConfig(renderer="tiny", image_width=96, image_height=96))
    world.reset(seed=5, family="pick")
    frame = world.observe()["images"][world.config.cameras[0]]
    world.close()
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    for _ in range(n):
        w.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    w.release()
    return path


@pytest.mark.timeout(300)
@pytest.mark.parametrize("profile", ["panda", "fr3", "ur5e", "so100"])
def test_robot_graph_on_a_stand_in_controller(profile, probe, start_nodes, tmp_path):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, String
    from std_srvs.srv import SetBool

    from vla_rl_ros.core.robot_profile import load_profile
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    from diagnostic_msgs.msg import DiagnosticArray

    prof = load_profile(profile)
    probe.collect(DiagnosticArray, "/diagnostics", 10)
    probe.collect(String, MOCK_STATUS, LATCHED_QOS)
    probe.collect(String, SAFETY_STATUS, LATCHED_QOS)
    arm = lambda: probe.latest_json(MOCK_STATUS) or {}  # noqa: E731
    safety = lambda: probe.latest_json(SAFETY_STATUS) or {}  # noqa: E731
    real_policy = profile in ("panda", "fr3")
    base = [NodeSpec("mock_arm_node", "mock_arm_node", {"profile": profile}),
            NodeSpec("safety_node", "safety_node", {"profile": profile, "dry_run": True,
                                                    "image_topic": "/camera/image_raw" if real_policy else "",
                                                    # the robot graph's path: policy -> exploration (deploy) -> safety
                                                    **({"chunk_topic": "vla/executed_chunk"} if real_policy else {})},
                     required=True)]
    runner = start_nodes(*base, name="robot")
    policy_runner, stand_in = None, None
    if real_policy:  # the shipped robot graph's camera and policy nodes (its logger is not needed here)
        from vla_rl_ros.graph import load_graph

        g = load_graph("robot", {"profile": profile, "camera_source": str(_clip(tmp_path / "cam.avi")),
                                 "camera_rate": 15.0, "backend": "onnxruntime"})
        specs = {n.name: n for n in g.nodes}
        assert specs["policy_node"].parameters["swap_only_when_holding"] is True
        specs["policy_node"].parameters["allowed_weights_dirs"] = [str(tmp_path)]
        assert specs["safety_node"].parameters == {"profile": profile, "dry_run": True, "start_tolerance": 0.6,
                                                   "chunk_topic": "vla/executed_chunk", "use_sim_time": False}
        assert specs["exploration_node"].parameters["mode"] == "deploy"  # exploration off unless asked for
        assert specs["policy_node"].parameters["publish_to_controller"] is False  # only safety_node commands
        policy_runner = start_nodes(specs["camera_node"], specs["policy_node"], specs["exploration_node"],
                                    name="policy")
        pub_ins = probe.node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
        pub_ins.publish(String(data="pick up the red cube"))
    else:
        stand_in = PolicyStandIn(probe, prof, step=0.05)
    try:
        where = lambda: f"{safety()} {arm()} {runner.tail('safety_node')}"  # noqa: E731
        # 1. dry run: chunks are checked, nothing moves the arm
        assert probe.wait_for(lambda: safety().get("dry_run", 0) >= 10, 120), (
            where(), policy_runner.tail("policy_node") if policy_runner else "")
        assert arm().get("motion") == 0 and arm().get("accepted") == 0, arm()
        # 2. enabled: the controller accepts what the safety layer sends, within the limits
        assert probe.call(SetBool, "/vla/safety/enable", SetBool.Request(data=True)).success
        assert probe.wait_for(lambda: arm().get("motion", 0) >= 20, 20), where()
        a = arm()
        assert a["accepted"] / (a["accepted"] + a["rejected"]) >= 0.9, a
        assert a["rejected"] == 0, a["reasons"]
        assert a["outside_limits"] == 0 and a["faults"] == 0 and a["max_velocity_fraction"] <= 1.0 + 1e-6, a
        if profile == "panda":  # a new version waits while the arm is commanded, and swaps in at a hold
            from std_srvs.srv import Trigger

            from vla_rl_ros.core.paths import DEFAULT_CHECKPOINT
            from vla_rl_ros.core.policy.grounding import save_as_version

            probe.collect(String, "/vla/policy/status", LATCHED_QOS)
            pol = lambda: probe.latest_json("/vla/policy/status") or {}  # noqa: E731
            assert probe.wait_for(lambda: pol().get("version") is not None, 10)
            v0 = pol()["version"]
            new = save_as_version(DEFAULT_CHECKPOINT, tmp_path / "v_next", v0 + 1)
            weights = probe.node.create_publisher(String, "/vla/policy/weights", RELIABLE_QOS)
            assert probe.wait_for(lambda: weights.get_subscription_count() > 0, 10)
            weights.publish(String(data=str(new)))
            assert probe.wait_for(lambda: pol().get("swap_waiting_for_hold") is True, 30), pol()
            time.sleep(1.0)
            assert pol()["version"] == v0 and safety()["commanding"], (pol(), safety())
            assert probe.call(Trigger, "/vla/safety/hold", Trigger.Request()).success
            assert probe.wait_for(lambda: pol().get("version") == v0 + 1, 10), pol()
            assert probe.call(SetBool, "/vla/safety/enable", SetBool.Request(data=True)).success
        # 3. stale joint states: no motion command 0.3 s into them; motion resumes when they return
        probe.set_parameter("mock_arm_node", "publish_states", False)
        assert probe.wait_for(lambda: "stale joint_states" in safety().get("hold_reasons", []), 5), where()
        time.sleep(1.0)
        assert arm()["motion_while_stale"] == 0, arm()
        probe.set_parameter("mock_arm_node", "publish_states", True)
        m0 = arm()["motion"]
        assert probe.wait_for(lambda: arm().get("motion", 0) > m0 + 3, 10), where()
        # 3b. the arm stops following (an obstacle): a tracking hold, kept until enabled again
        probe.set_parameter("mock_arm_node", "blocked", True)
        assert probe.wait_for(lambda: any(r.startswith("tracking error") for r in safety().get("hold_reasons", [])),
                              5), where()
        time.sleep(0.5)
        m0 = arm()["motion"]
        probe.set_parameter("mock_arm_node", "blocked", False)
        time.sleep(0.5)
        assert arm()["motion"] == m0, arm()  # freed, it still holds: the operator decides
        assert probe.call(SetBool, "/vla/safety/enable", SetBool.Request(data=True)).success
        assert probe.wait_for(lambda: arm().get("motion", 0) > m0 + 3, 10), where()
        # 4. e-stop: none 0.2 s after it, enable refused while latched; clear + enable moves again
        pub_estop = probe.node.create_publisher(Bool, "/vla/safety/estop", LATCHED_QOS)
        holds = arm()["holds"]
        pub_estop.publish(Bool(data=True))
        assert probe.wait_for(lambda: safety().get("state") == "estopped", 5), where()
        assert probe.wait_for(lambda: arm().get("holds", 0) > holds, 5), arm()
        diag = lambda: [st for _, m in probe.msgs("/diagnostics") for st in m.status  # noqa: E731
                        if st.name == f"vla_rl_ros safety ({profile})"]
        assert probe.wait_for(lambda: diag() and diag()[-1].level == b"\x02", 5), diag()[-1:]  # ERROR on /diagnostics
        assert diag()[-1].message.startswith("estopped"), diag()[-1]
        time.sleep(1.0)
        assert arm()["motion_after_estop"] == 0, arm()
        assert not probe.call(SetBool, "/vla/safety/enable", SetBool.Request(data=True)).success
        pub_estop.publish(Bool(data=False))
        assert probe.wait_for(lambda: safety().get("state") == "disabled", 5), where()
        assert probe.call(SetBool, "/vla/safety/enable", SetBool.Request(data=True)).success
        m0 = arm()["motion"]
        assert probe.wait_for(lambda: arm().get("motion", 0) > m0 + 3, 10), where()
        # 5. the policy dies: the arm holds, and the status says why
        holds = arm()["holds"]
        if policy_runner is not None:
            os.killpg(policy_runner.procs["policy_node"].pid, signal.SIGKILL)
        else:
            stand_in.kill()
        assert probe.wait_for(lambda: "stale chunk" in safety().get("hold_reasons", []), 5), where()
        assert probe.wait_for(lambda: arm().get("holds", 0) > holds, 5), arm()
        m1 = arm()["motion"]
        time.sleep(1.0)
        assert arm()["motion"] == m1, arm()
        assert arm()["rejected"] == 0, arm()["reasons"]
        # 6. back to the start pose, slowly, without enabling the policy
        from std_srvs.srv import Trigger

        r = probe.call(Trigger, "/vla/safety/move_to_start", Trigger.Request())
        assert r.success, r.message
        home = dict(zip(prof.joints, prof.home))
        at_home = lambda: max(abs(p - home[n]) for n, p in zip(probe.msgs("/joint_states")[-1][1].name,  # noqa: E731
                                                                 probe.msgs("/joint_states")[-1][1].position)
                              if n in prof.arm_joints) < 1e-3
        probe.collect(JointState, "/joint_states", RELIABLE_QOS)
        assert probe.wait_for(lambda: probe.msgs("/joint_states") and at_home(), 30), (r.message, arm())
        assert arm()["max_velocity_fraction"] <= 1.0 + 1e-6 and arm()["rejected"] == 0, arm()
        assert safety()["state"] != "enabled" or not safety()["commanding"], safety()
        assert "safety_node" not in runner.dead(), runner.tail("safety_node")
    finally:
        if stand_in is not None:
            stand_in.kill()


@pytest.mark.timeout(180)
def test_joint_states_off_the_local_clock_hold_the_arm_until_they_agree(probe, start_nodes):
    """A robot computer whose clock is 5 s off: enabled, the layer still holds (the reason on its
    status) and nothing moves; once the stamps agree, the arm moves."""
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    from vla_rl_ros.core.robot_profile import load_profile
    from vla_rl_ros.nodes.common import LATCHED_QOS

    probe.collect(String, MOCK_STATUS, LATCHED_QOS)
    probe.collect(String, SAFETY_STATUS, LATCHED_QOS)
    arm = lambda: probe.latest_json(MOCK_STATUS) or {}  # noqa: E731
    safety = lambda: probe.latest_json(SAFETY_STATUS) or {}  # noqa: E731
    runner = start_nodes(NodeSpec("mock_arm_node", "mock_arm_node", {"profile": "ur5e", "stamp_offset_s": 5.0}),
                         NodeSpec("safety_node", "safety_node", {"profile": "ur5e", "image_topic": ""}, required=True))
    stand_in = PolicyStandIn(probe, load_profile("ur5e"))
    try:
        assert probe.wait_for(lambda: safety().get("dry_run", 0) >= 5, 60), runner.tail("safety_node")
        assert probe.call(SetBool, "/vla/safety/enable", SetBool.Request(data=True)).success
        assert probe.wait_for(lambda: "joint_states clock offset" in safety().get("hold_reasons", []), 5), safety()
        time.sleep(1.5)
        assert arm()["motion"] == 0, arm()
        assert "from this computer's clock" in runner.tail("safety_node", 50)
        probe.set_parameter("mock_arm_node", "stamp_offset_s", 0.0)
        assert probe.wait_for(lambda: arm().get("motion", 0) >= 5, 10), (safety(), arm())
    finally:
        stand_in.kill()


@pytest.mark.timeout(180)
def test_two_arms_side_by_side_in_namespaces(probe, start_nodes):
    """The robot graph's namespace argument: two ur5e arms (/left, /right) whose topics do not
    collide; /left's e-stop holds the left arm only, the global /vla/safety/estop holds both."""
    from std_msgs.msg import Bool, String
    from std_srvs.srv import SetBool

    from vla_rl_ros.core.robot_profile import load_profile
    from vla_rl_ros.graph import load_graph
    from vla_rl_ros.nodes.common import LATCHED_QOS

    prof = load_profile("ur5e")
    arms, stand_ins = {}, []
    probe.collect(String, "/vla/safety/status", LATCHED_QOS)  # the root namespace: must stay silent
    for side in ("left", "right"):
        ns = load_graph("robot", {"namespace": side}).nodes[0].namespace
        assert ns == f"/{side}"
        probe.collect(String, f"{ns}/mock_arm/status", LATCHED_QOS)
        probe.collect(String, f"{ns}/vla/safety/status", LATCHED_QOS)
        start_nodes(NodeSpec("mock_arm_node", "mock_arm_node", {"profile": "ur5e"}, namespace=ns),
                    NodeSpec("safety_node", "safety_node", {"profile": "ur5e", "image_topic": ""}, required=True,
                             namespace=ns), name=side)
        stand_ins.append(PolicyStandIn(probe, prof, namespace=ns))
        arms[side] = (lambda ns=ns: probe.latest_json(f"{ns}/mock_arm/status") or {},
                      lambda ns=ns: probe.latest_json(f"{ns}/vla/safety/status") or {})
    try:
        for side, (arm, safety) in arms.items():
            assert probe.wait_for(lambda: safety().get("dry_run", 0) >= 5, 60), (side, safety())
            assert probe.call(SetBool, f"/{side}/vla/safety/enable", SetBool.Request(data=True)).success
            assert probe.wait_for(lambda: arm().get("motion", 0) >= 5, 10), (side, arm())
        assert probe.msgs("/vla/safety/status") == []  # nothing in the root namespace
        left_estop = probe.node.create_publisher(Bool, "/left/vla/safety/estop", LATCHED_QOS)
        left_estop.publish(Bool(data=True))
        assert probe.wait_for(lambda: arms["left"][1]().get("state") == "estopped", 5)
        m = arms["right"][0]()["motion"]
        assert probe.wait_for(lambda: arms["right"][0]().get("motion", 0) > m + 5, 5)  # the right arm moves on
        assert arms["right"][1]()["state"] == "enabled"
        probe.node.create_publisher(Bool, "/vla/safety/estop", LATCHED_QOS).publish(Bool(data=True))
        assert probe.wait_for(lambda: arms["right"][1]().get("state") == "estopped", 5), arms["right"][1]()
        time.sleep(1.0)
        for side, (arm, _) in arms.items():
            assert arm()["motion_after_estop"] == 0 and arm()["rejected"] == 0, (side, arm())
    finally:
        for s in stand_ins:
            s.kill()


@pytest.mark.timeout(180)
def test_use_sim_time_puts_every_node_on_the_clock_topic(probe, start_nodes):
    """The robot graph's use_sim_time argument: an arm on simulated time (/clock at t = 1000 s)
    is held for a clock offset by a safety node on wall time, and commanded by one on /clock."""
    import threading

    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    from vla_rl_ros.core.robot_profile import load_profile
    from vla_rl_ros.graph import load_graph
    from vla_rl_ros.nodes.common import LATCHED_QOS

    assert all(n.parameters["use_sim_time"] for n in load_graph("robot", {"use_sim_time": "true"}).nodes)
    pub = probe.node.create_publisher(Clock, "/clock", 10)
    stop = threading.Event()

    def clock():
        t = 1000.0
        while not stop.is_set():
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = int(t), int((t % 1) * 1e9)
            pub.publish(msg)
            t += 0.01
            time.sleep(0.01)

    threading.Thread(target=clock, daemon=True).start()
    stand_in = None
    try:
        for sim_safety in (False, True):  # each run in its own namespace: no status of the other one
            ns = "/on_clock" if sim_safety else "/on_wall"
            probe.collect(String, ns + MOCK_STATUS, LATCHED_QOS)
            probe.collect(String, ns + SAFETY_STATUS, LATCHED_QOS)
            safety = lambda: probe.latest_json(ns + SAFETY_STATUS) or {}  # noqa: E731
            arm = lambda: probe.latest_json(ns + MOCK_STATUS) or {}  # noqa: E731
            runner = start_nodes(
                NodeSpec("mock_arm_node", "mock_arm_node", {"profile": "ur5e", "use_sim_time": True}, namespace=ns),
                NodeSpec("safety_node", "safety_node", {"profile": "ur5e", "image_topic": "",
                                                        "use_sim_time": sim_safety}, required=True, namespace=ns),
                name=ns[1:])
            stand_in = PolicyStandIn(probe, load_profile("ur5e"), namespace=ns)
            assert probe.wait_for(lambda: safety().get("dry_run", 0) >= 5, 60), runner.tail("safety_node")
            assert probe.call(SetBool, ns + "/vla/safety/enable", SetBool.Request(data=True)).success
            offset = lambda: "joint_states clock offset" in safety().get("hold_reasons", [])  # noqa: E731
            if sim_safety:
                assert probe.wait_for(lambda: arm().get("motion", 0) > 5, 10), (safety(), arm())
                assert not offset(), safety()
            else:
                assert probe.wait_for(offset, 10), safety()
                assert arm().get("motion", 0) == 0, arm()
            stand_in.kill()
            runner.stop(timeout=20)
    finally:
        stop.set()
        if stand_in is not None:
            stand_in.kill()
