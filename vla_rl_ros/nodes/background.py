"""An rclpy node spinning in a background thread of a non-ROS program (the CLI, tests, benches).

It has its own rclpy context, so it never interferes with another node in the same process.
``collect(type, topic, qos)`` records every message with its arrival time; ``latest_json`` keeps
the newest JSON payload of a ``std_msgs/String`` topic.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
import weakref

CLOSE_TIMEOUT_S = 5.0  # how long close() waits for the spin thread to return


def _close_at_exit(ref) -> None:
    bg = ref()
    if bg is not None:
        bg.close()


class BackgroundNode:
    def __init__(self, name: str, domain_id: int | None = None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self._rclpy = rclpy
        self.context = rclpy.Context()
        if domain_id is None:
            rclpy.init(context=self.context)
        else:
            rclpy.init(context=self.context, domain_id=int(domain_id))
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.received: dict[str, list] = {}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._closed = False
        self.thread = threading.Thread(target=self._spin, name=f"spin-{name}", daemon=True)
        self.thread.start()
        # a program that forgets close() must still not exit with the spin thread inside rclpy:
        # a daemon thread stopped in native code at interpreter teardown aborts the process
        atexit.register(_close_at_exit, weakref.ref(self))

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # shutdown while spinning
            pass

    @staticmethod
    def _key(topic: str) -> str:
        """One key per topic whether it is named relative or absolute (this node is in the root
        namespace: ``vla/episode`` is ``/vla/episode``)."""
        return "/" + topic.lstrip("/")

    def collect(self, msg_type, topic: str, qos) -> None:
        key = self._key(topic)
        self.received[key] = []

        def cb(msg, key=key):
            with self.lock:
                self.received[key].append((time.monotonic(), msg))

        self.node.create_subscription(msg_type, topic, cb, qos)

    def msgs(self, topic: str) -> list:
        with self.lock:
            return list(self.received.get(self._key(topic), []))

    def json_msgs(self, topic: str) -> list[dict]:
        out = []
        for _, m in self.msgs(topic):
            try:
                out.append(json.loads(m.data))
            except (json.JSONDecodeError, AttributeError):
                pass
        return out

    def latest_json(self, topic: str) -> dict:
        items = self.json_msgs(topic)
        return items[-1] if items else {}

    def wait_for(self, pred, timeout: float = 30.0, poll: float = 0.05) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(poll)
        return False

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        """Call service ``name`` and return its response; AssertionError naming it if it does not answer."""
        cli = self.node.create_client(srv_type, name)
        try:
            assert cli.wait_for_service(timeout_sec=timeout), f"no service {name}"
            fut = cli.call_async(request)
            assert self.wait_for(fut.done, timeout), f"{name} did not answer within {timeout} s"
            return fut.result()
        finally:
            self.node.destroy_client(cli)

    def set_parameter(self, node: str, name: str, value, timeout: float = 10.0) -> None:
        """Set parameter ``name`` of the running node ``node`` (its ``set_parameters`` service)."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        res = self.call(SetParameters, f"/{node}/set_parameters",
                        SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]), timeout)
        bad = [r.reason for r in res.results if not r.successful]
        assert not bad, f"{node}.{name} = {value!r} refused: {bad}"

    def close(self) -> None:
        """Stop spinning and wait for the spin thread to return, then destroy the node and the
        context (in that order: nothing of rclpy is left running in the background). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.executor.shutdown(timeout_sec=CLOSE_TIMEOUT_S)
        self.thread.join(CLOSE_TIMEOUT_S)
        self.node.destroy_node()
        if self.context.ok():
            self._rclpy.shutdown(context=self.context)
        self.thread.join(CLOSE_TIMEOUT_S)
