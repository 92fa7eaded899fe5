"""ROS 2 integration tests: real rclpy nodes in real processes, isolated per test.

Each test gets its own ROS_DOMAIN_ID and LOCALHOST discovery, and every process it starts is
stopped when it ends (SIGINT, then SIGKILL of the process group).
"""

from __future__ import annotations

import os

import pytest

from vla_rl_ros.graph import Graph, GraphRunner, NodeSpec
from vla_rl_ros.nodes.background import BackgroundNode

_BASE = 40 + (os.getpid() % 50) * 3


@pytest.fixture
def domain_id(request):
    # a distinct domain per test (within 0..232), shared by the test's processes and its probe
    idx = getattr(request.config, "_vla_domain_idx", 0)
    request.config._vla_domain_idx = idx + 1
    did = (_BASE + idx) % 200 + 10
    os.environ["ROS_DOMAIN_ID"] = str(did)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return did


Probe = BackgroundNode  # a test-side rclpy node spinning in a background thread


@pytest.fixture
def probe(domain_id):
    p = Probe(f"probe_{os.getpid()}", domain_id)
    yield p
    p.close()


@pytest.fixture
def start_nodes(domain_id, tmp_path):
    runners = []

    def _start(*specs: NodeSpec, name="test"):
        g = Graph(name, "", {}, list(specs))
        r = GraphRunner(g, log_dir=str(tmp_path / f"logs_{len(runners)}"), domain_id=domain_id).start()
        runners.append(r)
        return r

    yield _start
    for r in runners:
        r.stop(timeout=20)
