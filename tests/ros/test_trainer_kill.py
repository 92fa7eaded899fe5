"""trainer_node killed mid-update (kill -9) and restarted (issue 19): nothing was announced, no
round folder holds a checkpoint that fails its manifest, the restarted node trains the next round
(never reusing the killed round's folder) and announces a checkpoint that verifies; restarted
again, it resumes from that checkpoint."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.core.test_rl import lagging_data  # noqa: F401  (real logged explored episodes)
from vla_rl_ros.graph import NodeSpec


def _train(probe) -> str:
    from std_srvs.srv import Trigger

    cli = probe.node.create_client(Trigger, "/vla/trainer/train")
    assert cli.wait_for_service(timeout_sec=60)
    fut = cli.call_async(Trigger.Request())
    assert probe.wait_for(fut.done, 30)
    res = fut.result()
    assert res.success, res.message
    return res.message


@pytest.mark.timeout(600)
def test_trainer_killed_mid_update_announces_nothing_and_resumes(lagging_data, probe, start_nodes, tmp_path):  # noqa: F811
    from std_msgs.msg import String

    from vla_rl_ros.core.policy.checkpoint import verify_files
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    ds, init = lagging_data
    out_root = tmp_path / "trainer"
    probe.collect(String, "/vla/policy/weights", RELIABLE_QOS)
    probe.collect(String, "/vla/trainer/status", LATCHED_QOS)
    status = lambda: probe.latest_json("/vla/trainer/status") or {}  # noqa: E731
    params = {"data": [str(ds)], "init": str(init), "out_root": str(out_root), "value_steps": 5, "threads": 1,
              "batch_size": 8}

    # 1. a long update, killed while it trains
    r1 = start_nodes(NodeSpec("trainer_node", "trainer_node", dict(params, epochs=100_000, target_kl=1e9)))
    assert probe.wait_for(lambda: status().get("state") == "idle", 60), r1.tail("trainer_node")
    assert "round 1" in _train(probe)
    assert probe.wait_for(lambda: status().get("state") == "training", 30), r1.tail("trainer_node")
    time.sleep(3.0)  # well inside the 100,000 epochs
    os.killpg(r1.procs["trainer_node"].pid, signal.SIGKILL)
    r1.procs["trainer_node"].wait(timeout=10)
    time.sleep(1.0)
    assert probe.msgs("/vla/policy/weights") == []  # nothing announced
    assert not (out_root / "round_1" / "checkpoint").exists()

    # 2. restarted: the next round is round 2 (round 1's folder is left as it is), from the init
    r2 = start_nodes(NodeSpec("trainer_node", "trainer_node", dict(params, epochs=1)))
    assert probe.wait_for(lambda: status().get("state") == "idle" and status().get("round") == 1, 60), status()
    assert "round 2" in _train(probe)
    assert probe.wait_for(lambda: status().get("state") == "done", 300), r2.tail("trainer_node")
    assert probe.wait_for(lambda: len(probe.msgs("/vla/policy/weights")) == 1, 10)
    announced = json.loads(probe.msgs("/vla/policy/weights")[0][1].data)
    assert announced["path"] == str(out_root / "round_2" / "checkpoint")
    verify_files(announced["path"])  # complete, checksums match
    os.killpg(r2.procs["trainer_node"].pid, signal.SIGKILL)
    r2.procs["trainer_node"].wait(timeout=10)

    # 3. restarted again: it resumes from round 2's checkpoint
    r3 = start_nodes(NodeSpec("trainer_node", "trainer_node", dict(params, epochs=1)))
    assert probe.wait_for(lambda: status().get("state") == "idle" and status().get("round") == 2
                          and status().get("current") == announced["path"], 60), (status(), r3.tail("trainer_node"))
