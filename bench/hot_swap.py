"""Hot swap under a running control loop, through the real ROS graph.

    .venv/bin/python bench/hot_swap.py [--policy CKPT] [--rate 20] [--swaps 10] [--period 3]

sim_node + policy_node (deploy mode) run at ``--rate`` Hz. Every ``--period`` seconds this
script announces a new checkpoint on ``/vla/policy/weights`` — alternately two valid versions of
the policy (the given one and a copy re-versioned with slightly perturbed action-head weights), and
every third announcement a corrupt copy (one flipped byte: refused). Prints, side by side:

* late control ticks over the whole run (every swap's load included), from sim_node's
  ``/sim/status`` (``core/control.py``: a tick running on no chunk or on one at least
  ``replan_every`` ticks old, i.e. a fresh chunk was due and had not arrived), the chunk age
  p50/p99/max (ticks since the chunk's observation) and the longest run of late ticks; and the
  ticks where the controller ran out of chunk (``hold``), in the whole run and within ±1 s of an
  announcement;
* the longest gap between two consecutive commands on the controller topic (and the nominal
  period);
* swap latency: announce → validated (load + checks, off the control path), the swap itself
  in the inference thread (µs), and announce → first chunk from the new version.
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


def make_versions(ckpt: str, tmp: Path) -> tuple[str, str, str]:
    import torch

    from vla_rl_ros.core.policy.backends import export_onnx
    from vla_rl_ros.core.policy.checkpoint import load_checkpoint, save_checkpoint
    from vla_rl_ros.core.robot import PANDA

    model, cfg = load_checkpoint(ckpt, joint_names=PANDA.joint_names)
    v = int(cfg.get("version", 0))
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    # like train-rl's output: the ONNX export ships inside the checkpoint (covered by the manifest)
    onnx = export_onnx(model, tmp / "model.onnx")
    other = save_checkpoint(model, tmp / "other", version=v + 1, instructions=cfg.get("instructions"),
                            extra_files={"model.onnx": onnx})
    corrupt = save_checkpoint(model, tmp / "corrupt", version=v + 2, instructions=cfg.get("instructions"),
                              extra_files={"model.onnx": onnx})
    with open(corrupt / "model.safetensors", "r+b") as f:
        f.seek(4096)
        b = f.read(1)
        f.seek(4096)
        f.write(bytes([b[0] ^ 0xFF]))
    return ckpt, str(other), str(corrupt)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--swaps", type=int, default=9)
    ap.add_argument("--period", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.policy.checkpoint import read_config
    from vla_rl_ros.graph import GraphRunner, load_graph
    from vla_rl_ros.nodes.background import BackgroundNode
    from vla_rl_ros.core.paths import DEFAULT_CHECKPOINT
    from vla_rl_ros.nodes.common import (
        CONTROLLER_TOPIC, LATCHED_QOS, REFERENCE_TOPIC, RELIABLE_QOS, SIM_STATUS_TOPIC, policy_version_of,
    )

    ckpt = str(Path(args.policy or DEFAULT_CHECKPOINT).resolve())
    # under ./runs: one of the policy node's default allowed weights directories (core/policy/trust.py)
    Path("runs").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_swap_", dir="runs")).resolve()
    base, other, corrupt = make_versions(ckpt, tmp)
    size = int(read_config(ckpt)["policy"]["image_size"])
    domain = 100 + os.getpid() % 50
    g = load_graph("policy_sim", {"checkpoint": base, "control_rate": args.rate, "episodes": 0, "max_steps": 100000,
                                  "image_width": size, "image_height": size, "threads": args.threads,
                                  "backend": "onnxruntime"})
    bg = BackgroundNode("bench_swap", domain)
    bg.collect(JointTrajectory, CONTROLLER_TOPIC, RELIABLE_QOS)
    bg.collect(JointState, REFERENCE_TOPIC, RELIABLE_QOS)
    bg.collect(String, "/vla/policy/swap", LATCHED_QOS)
    bg.collect(String, "/vla/policy/status", LATCHED_QOS)
    bg.collect(String, SIM_STATUS_TOPIC, LATCHED_QOS)
    pub = bg.node.create_publisher(String, "/vla/policy/weights", RELIABLE_QOS)
    runner = GraphRunner(g, log_dir=str(tmp / "logs"), domain_id=domain).start()
    announced = []
    try:
        if not bg.wait_for(lambda: len(bg.msgs(CONTROLLER_TOPIC)) > 2 * args.rate, 180):
            raise SystemExit(f"the policy never commanded the arm; logs in {tmp / 'logs'}")
        time.sleep(args.period)
        targets = []
        for i in range(args.swaps):
            targets.append(corrupt if i % 3 == 2 else (other if len(targets) % 2 == 0 else base))
        for t in targets:
            announced.append((time.monotonic(), t))
            pub.publish(String(data=json.dumps({"path": t})))
            time.sleep(args.period)
            if runner.dead():
                raise SystemExit(f"graph died: {runner.dead()}")
        n_ref = len(bg.msgs(REFERENCE_TOPIC))  # a status that covers every tick seen so far
        bg.wait_for(lambda: (bg.latest_json(SIM_STATUS_TOPIC) or {}).get("ticks", 0) >= n_ref, 5)
    finally:
        runner.stop()
        time.sleep(0.2)
        bg.close()

    refs = bg.msgs(REFERENCE_TOPIC)
    first = next(i for i, (_, m) in enumerate(refs) if m.header.frame_id != "hold")
    run = refs[first:]
    missed_t = [t for t, m in run if m.header.frame_id == "hold" or m.header.frame_id.endswith(":hold")]
    cmds = bg.msgs(CONTROLLER_TOPIC)
    ct = np.array([t for t, _ in cmds])
    gaps = np.diff(ct) * 1e3
    swap_events = bg.json_msgs("/vla/policy/swap")
    swapped = [e for e in swap_events if e["event"] == "swapped"]
    refused = [e for e in swap_events if e["event"] == "refused"]
    loaded = [e for e in swap_events if e["event"] == "loaded"]
    # announce -> first command from the new version
    first_cmd = []
    for t_ann, path in announced:
        if path == corrupt:
            continue
        want = int(read_config(path)["version"])
        after = [t for t, m in cmds if t > t_ann and policy_version_of(m) == want]
        if after:
            first_cmd.append((after[0] - t_ann) * 1e3)
    near = sum(1 for t in missed_t if any(abs(t - a) < 1.0 for a, _ in announced))
    period = 1e3 / args.rate
    print(f"\nhot swap under a {args.rate:.0f} Hz control loop (sim_node + policy_node, {len(run)} ticks, "
          f"{len(announced)} announcements: {len(swapped)} swapped, {len(refused)} refused)")
    st = bg.latest_json(SIM_STATUS_TOPIC)
    if st:
        print(f"late control ticks (chunk >= {st['replan_every']} tick(s) old, or none): {st['late']} of "
              f"{st['ticks']} ({100 * st['late_fraction']:.1f}%), longest run {st['longest_late_run']}; chunk age "
              f"p50 {st['age_p50']} / p99 {st['age_p99']} / max {st['age_max']} ticks; sim tick overruns "
              f"{st['overruns']}")
    print(f"ticks that ran out of chunk (hold): {len(missed_t)} of {len(run)} "
          f"(within ±1 s of an announcement: {near})")
    print(f"longest gap between consecutive commands: {gaps.max():.1f} ms (nominal {period:.1f} ms; "
          f"p99 {np.percentile(gaps, 99):.1f} ms)")
    if loaded:
        lm = np.array([e["load_ms"] for e in loaded])
        print(f"announce -> validated (off the control path): p50 {np.median(lm):.0f} ms, max {lm.max():.0f} ms")
    if swapped:
        su = np.array([e["swap_us"] for e in swapped])
        print(f"swap in the inference thread: p50 {np.median(su):.1f} us, max {su.max():.1f} us")
    if first_cmd:
        print(f"announce -> first command from the new version: p50 {np.median(first_cmd):.0f} ms, "
              f"max {max(first_cmd):.0f} ms")
    versions_after_corrupt = []
    for t_ann, path in announced:
        if path == corrupt:
            versions_after_corrupt += [policy_version_of(m) for t, m in cmds if t_ann < t < t_ann + args.period]
    bad_v = int(read_config(corrupt)["version"])
    all_v = [policy_version_of(m) for _, m in cmds]
    print(f"refused (corrupt) announcements: {len(refused)}; commands from the corrupt version v{bad_v}: "
          f"{all_v.count(bad_v)} (commands in the {args.period:.0f} s after a corrupt announcement: "
          f"{len(versions_after_corrupt)}, versions {sorted(set(versions_after_corrupt))})")
    for e in refused[:1]:
        print(f"  reason: {e['reason']}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
