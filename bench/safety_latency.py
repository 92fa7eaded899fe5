"""E-stop latency and watchdog trip latency of the safety layer (issue 20).

    .venv/bin/python bench/safety_latency.py [--profile ur5e] [--repeats 20]

Starts ``mock_arm_node`` (the stand-in ros2_control arm) and ``safety_node`` (enabled), with
``PolicyStandIn`` sending chunks at 10 Hz, and measures, ``--repeats`` times each, from the event
to the first hold (an empty trajectory) seen on the controller topic by an observer node:

- **e-stop**: ``/vla/safety/estop`` published true → hold; and whether any motion command
  reached the controller after it (the bar: none 0.2 s after);
- **stale joint states**: the arm stops publishing them (measured from the last one received) → hold (``state_timeout_s`` 0.2 s + one
  watchdog period: the trip is by design not instant);
- **policy silent**: the chunks stop (measured from the last one) → hold (``chunk_timeout_s``
  1.0 s + one watchdog period).

Prints p50 / p99 / max per event, and the trip latency above the configured timeout. All on one
machine: the observer's receive times and the publish times share one monotonic clock.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.core.robot_profile import load_profile  # noqa: E402
from vla_rl_ros.core.safety import SafetyConfig  # noqa: E402
from vla_rl_ros.graph import Graph, GraphRunner, NodeSpec  # noqa: E402
from vla_rl_ros.nodes.background import BackgroundNode  # noqa: E402
from vla_rl_ros.standin import PolicyStandIn  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="ur5e")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--domain-id", type=int, default=97)
    args = ap.parse_args()
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    from std_msgs.msg import Bool, String
    from std_srvs.srv import SetBool
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    prof = load_profile(args.profile)
    cfg = SafetyConfig()
    g = Graph("safety_latency", "", {}, [
        NodeSpec("mock_arm_node", "mock_arm_node", {"profile": args.profile}),
        NodeSpec("safety_node", "safety_node", {"profile": args.profile, "dry_run": True, "image_topic": ""})])
    runner = GraphRunner(g, domain_id=args.domain_id).start()
    probe = BackgroundNode("safety_latency_probe", args.domain_id)
    probe.collect(JointTrajectory, prof.arm_topic, RELIABLE_QOS)
    probe.collect(String, "/vla/safety/status", LATCHED_QOS)
    estop = probe.node.create_publisher(Bool, "/vla/safety/estop", LATCHED_QOS)
    stand_in = PolicyStandIn(probe, prof)
    enable = lambda: probe.call(SetBool, "/vla/safety/enable", SetBool.Request(data=True)).success  # noqa: E731
    cmds = lambda: probe.msgs(prof.arm_topic)  # noqa: E731
    results: dict[str, list[float]] = {"e-stop": [], "stale joint states": [], "policy silent": []}
    after_estop = 0

    def moving_again(timeout=10.0) -> None:
        n = len(cmds())
        assert probe.wait_for(lambda: sum(1 for _, m in cmds()[n:] if m.points) >= 3, timeout), \
            (probe.latest_json("/vla/safety/status"), runner.tail("safety_node"))

    def first_hold_after(t0: float, timeout: float = 5.0) -> float:
        assert probe.wait_for(lambda: any(t >= t0 and not m.points for t, m in cmds()), timeout), \
            probe.latest_json("/vla/safety/status")
        return min(t for t, m in cmds() if t >= t0 and not m.points) - t0

    try:
        assert probe.wait_for(lambda: probe.latest_json("/vla/safety/status").get("dry_run", 0) > 5, 120), \
            runner.tail("safety_node")
        assert enable()
        for i in range(args.repeats):
            moving_again()
            t0 = time.monotonic()
            estop.publish(Bool(data=True))
            results["e-stop"].append(first_hold_after(t0))
            time.sleep(0.5)
            after_estop += sum(1 for t, m in cmds() if t > t0 + 0.2 and m.points)
            estop.publish(Bool(data=False))
            assert probe.wait_for(lambda: probe.latest_json("/vla/safety/status").get("state") == "disabled", 5)
            assert enable()

            moving_again()
            probe.set_parameter("mock_arm_node", "publish_states", False)
            time.sleep(0.05)
            t0 = probe.msgs("/joint_states")[-1][0]  # the last joint state, as received
            results["stale joint states"].append(first_hold_after(t0))
            probe.set_parameter("mock_arm_node", "publish_states", True)

            moving_again()
            stand_in.kill()
            t0 = stand_in.last_sent  # the policy's last chunk
            results["policy silent"].append(first_hold_after(t0))
            stand_in = PolicyStandIn(probe, prof)
            print(f"repeat {i + 1}/{args.repeats}: " + ", ".join(f"{k} {1e3 * v[-1]:.0f} ms" for k, v in results.items()),
                  flush=True)
    finally:
        stand_in.kill()
        probe.close()
        runner.stop(timeout=20)

    timeouts = {"e-stop": 0.0, "stale joint states": cfg.state_timeout_s, "policy silent": cfg.chunk_timeout_s}
    print(f"\nprofile {args.profile}; {args.repeats} repeats; watchdog every {1e3 / 50:.0f} ms "
          "(safety_node watchdog_rate 50 Hz)")
    print(f"{'event':<20}{'timeout':>9}{'p50':>9}{'p99':>9}{'max':>9}{'max - timeout':>15}")
    for k, v in results.items():
        a = 1e3 * np.array(v)
        print(f"{k:<20}{1e3 * timeouts[k]:>7.0f}ms{np.percentile(a, 50):>7.1f}ms{np.percentile(a, 99):>7.1f}ms"
              f"{a.max():>7.1f}ms{a.max() - 1e3 * timeouts[k]:>13.1f}ms")
    print(f"motion commands reaching the controller > 0.2 s after an e-stop: {after_estop}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
