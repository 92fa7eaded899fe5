"""ROS 2 integration tests: real rclpy nodes in real processes, isolated per test.

Each test gets its own ROS_DOMAIN_ID and LOCALHOST discovery, and every process it starts is
stopped when it ends (SIGINT, then SIGKILL of the process group).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from vla_rl_ros.graph import Graph, GraphRunner, NodeSpec

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


class Probe:
    """A test-side rclpy node spinning in a background thread."""

    def __init__(self, domain_id: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(f"probe_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received: dict[str, list] = {}
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:
            pass

    def collect(self, msg_type, topic, qos, keep=True):
        self.received[topic] = []

        def cb(msg, topic=topic):
            with self.lock:
                self.received[topic].append((time.monotonic(), msg))

        self.node.create_subscription(msg_type, topic, cb, qos)

    def msgs(self, topic):
        with self.lock:
            return list(self.received.get(topic, []))

    def wait_for(self, pred, timeout=30.0, poll=0.05):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(poll)
        return False

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


@pytest.fixture
def probe(domain_id):
    p = Probe(domain_id)
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
