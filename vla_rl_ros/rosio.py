"""The rclpy side that verbs and benches share: watch a running graph, announce weights, roll
back, set a node's parameter, and collect explored episodes through the explore graph for the
improve loop (:class:`GraphCollector`, the graph implementation of ``core/improve.Collector``).

Imports rclpy (through ``nodes/background.py``) when these are *used*; importing this module alone
does not, so ROS-free verbs may import names from it lazily.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from vla_rl_ros.core.topics import (
    EPISODE_TOPIC,
    EXPLORATION_STATUS_TOPIC,
    LOGGER_STATUS_TOPIC,
    POLICY_ROLLBACK_SERVICE,
    POLICY_STATUS_TOPIC,
    POLICY_SWAP_TOPIC,
    POLICY_WEIGHTS_TOPIC,
)


class GraphMonitor:
    """Watches episode events, the logger's and the policy's status from this process."""

    def __init__(self, domain_id: int | None, name: str = "vla_rl_ros_cli"):
        from std_msgs.msg import String

        from vla_rl_ros.nodes.background import BackgroundNode
        from vla_rl_ros.nodes.common import LATCHED_QOS

        self.bg = BackgroundNode(name, domain_id)
        # transient-local: events published before discovery completed (a fast first episode on a
        # loaded machine) are still delivered from the simulator's history
        for topic in (EPISODE_TOPIC, LOGGER_STATUS_TOPIC, POLICY_STATUS_TOPIC):
            self.bg.collect(String, topic, LATCHED_QOS)

    def watch(self, topic: str) -> None:
        """Also keep the (latched, JSON) messages of ``topic``."""
        from std_msgs.msg import String

        from vla_rl_ros.nodes.common import LATCHED_QOS

        self.bg.collect(String, topic, LATCHED_QOS)

    @property
    def events(self) -> list[dict]:
        return self.bg.json_msgs(EPISODE_TOPIC)

    @property
    def status(self) -> dict:
        return self.bg.latest_json(LOGGER_STATUS_TOPIC)

    @property
    def policy_status(self) -> dict:
        return self.bg.latest_json(POLICY_STATUS_TOPIC)

    def ended(self) -> list[dict]:
        seen, out = set(), []
        for e in self.events:
            if e.get("event") == "end" and e.get("episode") not in seen:
                seen.add(e.get("episode"))
                out.append(e)
        return out

    def close(self):
        self.bg.close()


def print_swap_verdict(e: dict) -> None:
    if e["event"] == "swapped":
        print(f"policy node now runs v{e['version']} (was v{e['previous_version']}); load {e['load_ms']:.0f} ms, "
              f"swap {e['swap_us']:.0f} us")
    else:
        print(f"policy node REFUSED {e['path']}: {e['reason']}", file=sys.stderr)


def publish_weights(bg, pub, path: str, events=("swapped", "refused"), timeout: float = 30.0) -> dict:
    """Publish ``path`` on the weights topic from ``bg`` and wait for the policy node's first
    verdict among ``events`` on the swap topic; ``{}`` when none came within ``timeout``."""
    target = str(Path(path).resolve())
    pub.publish(_string(json.dumps({"path": target})))
    verdict = lambda: [e for e in bg.json_msgs(POLICY_SWAP_TOPIC)  # noqa: E731
                       if e.get("path") == target and e.get("event") in events]
    bg.wait_for(verdict, timeout)
    got = verdict()
    return got[-1] if got else {}


def _string(text: str):
    from std_msgs.msg import String

    return String(data=text)


def announce_weights(path: str, domain_id=None, timeout: float = 30.0) -> dict:
    """Publish ``path`` on /vla/policy/weights and wait for the policy node's verdict (printed)."""
    from std_msgs.msg import String

    from vla_rl_ros.nodes.background import BackgroundNode
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    bg = BackgroundNode(f"announce_{os.getpid()}", domain_id)
    try:
        bg.collect(String, POLICY_SWAP_TOPIC, LATCHED_QOS)
        pub = bg.node.create_publisher(String, POLICY_WEIGHTS_TOPIC, RELIABLE_QOS)
        bg.wait_for(lambda: pub.get_subscription_count() > 0, 10)
        if pub.get_subscription_count() == 0:
            print(f"no policy_node is listening on {POLICY_WEIGHTS_TOPIC}", file=sys.stderr)
            return {}
        e = publish_weights(bg, pub, path, timeout=timeout)
        if not e:
            print(f"no verdict from the policy node within {timeout:.0f}s", file=sys.stderr)
            return {}
        print_swap_verdict(e)
        return e
    finally:
        bg.close()


def request_rollback(domain_id=None) -> tuple[bool, str]:
    """Ask the running policy node to go back to its previous weights: (success, message)."""
    from std_srvs.srv import Trigger

    from vla_rl_ros.nodes.background import BackgroundNode

    bg = BackgroundNode(f"rollback_{os.getpid()}", domain_id)
    try:
        cli = bg.node.create_client(Trigger, POLICY_ROLLBACK_SERVICE)
        if not cli.wait_for_service(timeout_sec=10):
            return False, f"no policy_node offers {POLICY_ROLLBACK_SERVICE}"
        fut = cli.call_async(Trigger.Request())
        if not bg.wait_for(fut.done, 20):
            return False, "rollback request timed out"
        res = fut.result()
        return bool(res.success), res.message
    finally:
        bg.close()


def set_parameter(bg, node: str, name: str, value, timeout: float = 60.0) -> None:
    """Set ``node``'s parameter ``name`` (bool or int) through its parameter service."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    cli = bg.node.create_client(SetParameters, f"/{node}/set_parameters")
    try:
        if not cli.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"{node} does not answer parameter requests")
        v = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=bool(value)) if isinstance(value, bool) \
            else ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(value))
        fut = cli.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=v)]))
        if not bg.wait_for(fut.done, 30):
            raise RuntimeError(f"setting {node}.{name} timed out")
    finally:
        bg.node.destroy_client(cli)


class GraphCollector:
    """``core/improve.Collector`` through the explore graph (``config/graphs/explore.yaml``),
    started once; rounds are gated with sim_node's ``paused`` parameter and new weights are hot
    swapped into the still-running policy node."""

    STOP_ORDER = ["sim_node", "exploration_node", "policy_node", "trajectory_logger"]

    def __init__(self, ckpt: str, data: Path, cfg, log_dir: Path, ready_timeout: float = 180.0):
        from vla_rl_ros.core.policy.checkpoint import read_config
        from vla_rl_ros.graph import GraphRunner, load_graph

        size = int(read_config(ckpt)["policy"]["image_size"])
        graph = load_graph("explore", {
            "checkpoint": str(Path(ckpt).resolve()), "out": str(data), "seed": cfg.collect_seed,
            "episodes": 0, "real_time_factor": cfg.real_time_factor, "image_width": size, "image_height": size,
            "sigma": list(cfg.sigma), "gripper_sigma": cfg.gripper_sigma, "explore_seed": cfg.seed,
            "backend": "onnxruntime", "max_steps": cfg.max_steps, "seed_repeat": cfg.seed_repeat,
        })
        for n in graph.nodes:
            if n.name == "sim_node":
                n.parameters["paused"] = True
            if n.name == "policy_node":  # the rounds' checkpoints are written under the run's folder
                n.parameters["allowed_weights_dirs"] = [str(Path(cfg.out).resolve())]
        self.cfg = cfg
        self.monitor = GraphMonitor(cfg.domain_id)
        self.monitor.watch(POLICY_SWAP_TOPIC)
        self.monitor.watch(EXPLORATION_STATUS_TOPIC)
        self.runner = GraphRunner(graph, log_dir=str(log_dir), domain_id=cfg.domain_id).start()
        self.log_dir = log_dir
        self._pub = None
        # episodes start only once the policy (model loaded) and the logger are up
        m = self.monitor
        ready = lambda: m.policy_status and m.status and m.bg.msgs(EXPLORATION_STATUS_TOPIC)  # noqa: E731
        t0 = time.monotonic()
        while not ready():
            self._check()
            if time.monotonic() - t0 > ready_timeout:
                raise RuntimeError(f"the graph did not come up within {ready_timeout:.0f} s; logs in {log_dir}")
            time.sleep(0.2)

    def _set(self, node: str, name: str, value) -> None:
        try:
            set_parameter(self.monitor.bg, node, name, value)
        except RuntimeError as e:
            raise RuntimeError(f"{e}; logs in {self.log_dir}") from e

    def _check(self) -> None:
        dead = self.runner.dead()
        if dead:
            tails = "\n".join(f"--- {n} (exit {c})\n{self.runner.tail(n, 15)}" for n, c in dead.items())
            raise RuntimeError(f"graph node(s) died:\n{tails}")

    def collect(self, round_index: int, checkpoint: str, progress) -> list[dict]:
        """Run round ``round_index`` (0-based) until its episodes have ended and been saved; the
        checkpoint is the one last announced. Returns the round's episode-end events."""
        target_total = (round_index + 1) * self.cfg.episodes_per_round
        before = len(self.monitor.ended())
        self._set("exploration_node", "round_index", round_index)
        self._set("sim_node", "paused", False)
        paused = False
        last, t_last = -1, time.monotonic()
        while True:
            time.sleep(0.2)
            self._check()
            n = len(self.monitor.ended())
            if n != last:
                last, t_last = n, time.monotonic()
                progress(n - before)
            started = len({e.get("episode") for e in self.monitor.events if e.get("event") == "start"})
            if not paused and started >= target_total:
                self._set("sim_node", "paused", True)  # the running episode is the round's last
                paused = True
            saved = int(self.monitor.status.get("saved", 0))
            if n >= target_total and saved >= n:
                return self.monitor.ended()[before:]
            if time.monotonic() - t_last > self.cfg.stall_timeout:
                raise RuntimeError(f"no episode ended for {self.cfg.stall_timeout:.0f} s; logs in {self.log_dir}")

    def announce(self, ckpt: str) -> dict:
        """Hot swap ``ckpt`` into the running policy node: its verdict once validated (installed at
        its next inference, the next round's first observation)."""
        from std_msgs.msg import String

        from vla_rl_ros.nodes.common import RELIABLE_QOS

        bg = self.monitor.bg
        if self._pub is None:
            self._pub = bg.node.create_publisher(String, POLICY_WEIGHTS_TOPIC, RELIABLE_QOS)
            bg.wait_for(lambda: self._pub.get_subscription_count() > 0, 30)
        ev = publish_weights(bg, self._pub, ckpt, events=("loaded", "refused"), timeout=120)
        if not ev:
            raise RuntimeError(f"the policy node gave no verdict on {ckpt}")
        if ev["event"] == "refused":
            raise RuntimeError(f"the policy node refused {ckpt}: {ev['reason']}")
        return ev

    def close(self) -> None:
        self.runner.stop(order=self.STOP_ORDER, timeout=300)
        self.monitor.close()
