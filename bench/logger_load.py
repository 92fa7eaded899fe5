"""The trajectory_logger under load, through real rclpy processes.

    .venv/bin/python bench/logger_load.py [--minutes 5] [--rate 30] [--size 224] [--episode-frames 300]

A publisher process plays a robot at exactly ``--rate`` Hz (wall clock): 224x224 rgb8 images
(random content, so PNG cannot cheat), joint states, the applied reference, rewards and episode
events, in ``--episode-frames``-long episodes. The real trajectory_logger node records it with
the real LeRobot writer. Prints frames published vs saved, dropped frames, the logger's worst
executor stall (a 100 Hz timer's lateness, i.e. how long saving blocked the node) and the
background save time per episode.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--episode-frames", type=int, default=300)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    import rclpy
    from geometry_msgs.msg import Vector3Stamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.graph import Graph, GraphRunner, NodeSpec
    from vla_rl_ros.nodes.common import (
        EPISODE_TOPIC, JOINT_STATES_TOPIC, LATCHED_QOS, LOGGER_STATUS_TOPIC, REFERENCE_TOPIC,
        RELIABLE_QOS, REWARD_TOPIC, SENSOR_QOS, image_to_msg, joint_state_msg, json_msg, ns_to_stamp,
    )
    from vla_rl_ros.core.data.reader import episode_summaries

    domain = 120 + os.getpid() % 60
    out = Path(tempfile.mkdtemp(prefix="logger_load_")) / "ds"
    g = Graph("load", "", {}, [NodeSpec("trajectory_logger", "trajectory_logger", {
        "out": str(out), "control_rate": args.rate, "image_width": args.size, "image_height": args.size})])
    runner = GraphRunner(g, log_dir=str(out.parent / "logs"), domain_id=domain).start()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("fake_robot", context=ctx)
    pub_img = node.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
    pub_js = node.create_publisher(JointState, JOINT_STATES_TOPIC, RELIABLE_QOS)
    pub_ref = node.create_publisher(JointState, REFERENCE_TOPIC, RELIABLE_QOS)
    pub_rew = node.create_publisher(Vector3Stamped, REWARD_TOPIC, RELIABLE_QOS)
    pub_ev = node.create_publisher(String, EPISODE_TOPIC, LATCHED_QOS)
    status = {}
    node.create_subscription(String, LOGGER_STATUS_TOPIC, lambda m: status.update(json.loads(m.data)), LATCHED_QOS)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8) for _ in range(16)]
    while not status and runner.dead() == {}:  # wait for the logger to come up
        ex.spin_once(timeout_sec=0.1)
    total = int(args.minutes * 60 * args.rate)
    period = 1.0 / args.rate
    published, episode, k, late = 0, 0, 0, 0
    t_next = time.perf_counter()
    t0 = time.perf_counter()
    print(f"publishing {total} frames at {args.rate} Hz ({args.size}x{args.size}) for {args.minutes} min ...", flush=True)
    while published < total:
        if k == 0:
            ns = time.time_ns()
            pub_ev.publish(json_msg({"event": "start", "episode": episode, "instruction": "pick up the red cube",
                                     "stamp_ns": ns, "family": "pick"}))
        now = time.perf_counter()
        if now < t_next:
            ex.spin_once(timeout_sec=max(0.0, t_next - now))
            continue
        if now - t_next > period:
            late += 1
        t_next += period
        ns = time.time_ns()
        stamp = ns_to_stamp(ns)
        q = PANDA.home + 0.01 * np.sin(k / 10.0)
        pub_js.publish(joint_state_msg(q, None, stamp))
        img = noise[k % 16].copy()
        img[0, 0, 0] = k % 256
        pub_img.publish(image_to_msg(img, stamp))
        pub_ref.publish(joint_state_msg(q, None, stamp, frame_id="hold"))
        r = Vector3Stamped()
        r.header.stamp = stamp
        done = k == args.episode_frames - 1 or published == total - 1
        r.vector.x, r.vector.y, r.vector.z = 0.0, 0.0, float(done)
        pub_rew.publish(r)
        published += 1
        k += 1
        if done:
            pub_ev.publish(json_msg({"event": "end", "episode": episode, "steps": k, "success": False}))
            episode += 1
            k = 0
    wall = time.perf_counter() - t0
    deadline = time.monotonic() + 600
    while status.get("saved", 0) < episode and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.2)
    for _ in range(10):
        ex.spin_once(timeout_sec=0.1)
    runner.stop(timeout=300)
    rows = episode_summaries(out)
    saved_frames = sum(r["length"] for r in rows)
    saves = [float(l.split(" in ")[1].rstrip("s\n")) for l in open(out.parent / "logs" / "trajectory_logger.log")
             if "saved episode" in l and " in " in l]
    print(f"published {published} frames in {wall:.0f}s ({published / wall:.1f} Hz, {late} late publisher ticks), "
          f"{episode} episodes")
    print(f"saved {saved_frames} frames in {len(rows)} episodes; dropped frames: {published - saved_frames} "
          f"(logger counted {status.get('dropped_frames')})")
    print(f"logger worst executor stall: {status.get('max_stall_ms')} ms (100 Hz watchdog timer lateness)")
    if saves:
        print(f"background save per {args.episode_frames}-frame episode: median {np.median(saves):.2f}s, max {max(saves):.2f}s")
    if not args.keep:
        shutil.rmtree(out.parent, ignore_errors=True)
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)
    return 0 if published == saved_frames else 1


if __name__ == "__main__":
    raise SystemExit(main())
