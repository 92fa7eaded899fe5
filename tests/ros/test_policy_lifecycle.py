"""The policy node as a managed (lifecycle) node (issue 20, item 7): with ``managed: true`` it
waits unconfigured; ``configure`` loads and warms up the checkpoint (status: inactive, holding, no
chunk); ``activate`` lets it command; ``deactivate`` stops the chunks at once; ``cleanup`` releases
it and a second configure + activate commands again; all through the standard lifecycle services
(``ros2 lifecycle set``'s), against the real simulator."""

from __future__ import annotations

import time

from vla_rl_ros.graph import NodeSpec

CHUNKS, STATUS = "/vla/action_chunk", "/vla/policy/status"


def test_managed_policy_node_commands_only_while_active(probe, start_nodes):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    probe.collect(JointTrajectory, CHUNKS, RELIABLE_QOS)
    probe.collect(String, STATUS, LATCHED_QOS)
    runner = start_nodes(
        NodeSpec("sim_node", "sim_node", {"control_rate": 10.0, "renderer": "tiny", "family": "push", "seed": 5,
                                          "episodes": 0, "max_steps": 100000, "end_on_success": False,
                                          "wait_for_publisher": STATUS}, required=True),
        NodeSpec("policy_node", "policy_node", {"managed": True, "control_rate": 10.0, "threads": 1,
                                                "sync": "exact"}, required=True))
    get = probe.node.create_client(GetState, "/policy_node/get_state")
    change = probe.node.create_client(ChangeState, "/policy_node/change_state")
    assert get.wait_for_service(timeout_sec=60) and change.wait_for_service(timeout_sec=10), \
        runner.tail("policy_node")

    def state() -> int:
        fut = get.call_async(GetState.Request())
        assert probe.wait_for(fut.done, 20)
        return fut.result().current_state.id

    def transition(tid: int) -> None:
        req = ChangeState.Request()
        req.transition.id = tid
        fut = change.call_async(req)
        assert probe.wait_for(fut.done, 240), runner.tail("policy_node")
        assert fut.result().success, (tid, runner.tail("policy_node", 30))

    chunks = lambda: len(probe.msgs(CHUNKS))  # noqa: E731
    status = lambda: probe.latest_json(STATUS) or {}  # noqa: E731
    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    time.sleep(1.0)
    assert chunks() == 0 and not probe.msgs(STATUS)  # nothing loaded, nothing published

    transition(Transition.TRANSITION_CONFIGURE)  # loads + warms up; the simulator starts on its status
    assert state() == State.PRIMARY_STATE_INACTIVE
    assert probe.wait_for(lambda: status().get("lifecycle") == "inactive" and status().get("hold"), 30), status()
    assert status()["hold"] == "inactive (lifecycle)"
    time.sleep(2.0)  # observations arrive (the simulator runs), the inactive node sends nothing
    assert chunks() == 0 and not runner.dead()

    transition(Transition.TRANSITION_ACTIVATE)
    assert state() == State.PRIMARY_STATE_ACTIVE
    assert probe.wait_for(lambda: chunks() >= 10, 60), runner.tail("policy_node")
    assert probe.wait_for(lambda: status().get("lifecycle") == "active", 10), status()

    transition(Transition.TRANSITION_DEACTIVATE)
    time.sleep(0.3)  # at most the chunk computed when the transition came
    n = chunks()
    time.sleep(2.0)
    assert chunks() == n, (n, chunks())
    assert state() == State.PRIMARY_STATE_INACTIVE

    transition(Transition.TRANSITION_CLEANUP)  # releases the runtime, its topics and threads
    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    time.sleep(1.0)
    assert chunks() == n
    transition(Transition.TRANSITION_CONFIGURE)
    transition(Transition.TRANSITION_ACTIVATE)
    assert probe.wait_for(lambda: chunks() >= n + 10, 60), runner.tail("policy_node")
    assert not runner.dead(), runner.dead()
