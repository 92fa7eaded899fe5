"""Policy inference benchmark, side by side in one run.

    .venv/bin/python bench/policy_latency.py [--policy CKPT] [--threads 2] [--graph-seconds 60]

Prints batch-1 latency p50/p99 of every available backend (torch eager, ONNX Runtime, TensorRT
when importable, torch CUDA eager vs CUDA graphs when a GPU is present), the ratio ONNX Runtime vs
torch eager, and — through the real ROS graph (sim_node + policy_node) — the camera-stamp ->
chunk-published latency p50/p99 and the number of control ticks at which the controller had no
fresh target (missed ticks) over ``--graph-seconds`` of simulated time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.core.policy.backends import (  # noqa: E402
    OnnxRuntimeBackend,
    TorchBackend,
    example_inputs,
    export_onnx,
    latency,
    parity,
    tensorrt_available,
)
from vla_rl_ros.core.policy.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vla_rl_ros.core.policy.model import PolicyConfig, VLAPolicy  # noqa: E402
from vla_rl_ros.core.robot import PANDA  # noqa: E402


def resolve_checkpoint(path: str) -> str:
    if path:
        return path
    shipped = Path(__file__).resolve().parents[1] / "models" / "vla_bc_v3"
    if (shipped / "config.json").is_file():
        return str(shipped)
    tmp = Path(tempfile.mkdtemp(prefix="bench_ckpt_"))
    m = VLAPolicy(PolicyConfig(joint_names=PANDA.joint_names))
    print(f"(no shipped checkpoint: timing a randomly initialised model of the default size in {tmp})")
    return str(save_checkpoint(m, tmp / "ckpt"))


def backend_table(ckpt: str, threads: int, n: int) -> list[tuple]:
    torch.set_num_threads(threads)
    model, _ = load_checkpoint(ckpt, joint_names=PANDA.joint_names)
    x = example_inputs(model, batch=1, seed=0)
    onnx = Path(ckpt) / "model.onnx"
    if not onnx.is_file():
        onnx = export_onnx(model, Path(tempfile.mkdtemp()) / "model.onnx")
    rows = []
    tb = TorchBackend(model, threads=threads)
    rows.append(("torch eager (cpu)", latency(tb, x, n=n)))
    ob = OnnxRuntimeBackend(onnx, threads=threads)
    rows.append((f"onnxruntime ({ob.providers[0]})", latency(ob, x, n=n)))
    d = parity(tb, ob, example_inputs(model, batch=4, seed=1))
    ok, why = tensorrt_available()
    if ok:  # pragma: no cover - needs TensorRT
        from vla_rl_ros.core.policy.backends import TensorRTBackend

        rows.append(("tensorrt fp16", latency(TensorRTBackend(onnx), x, n=n)))
    else:
        rows.append(("tensorrt", {"note": f"unavailable: {why}"}))
    if torch.cuda.is_available():  # pragma: no cover - needs a GPU
        gb = TorchBackend(model, device="cuda")
        rows.append(("torch eager (cuda)", latency(gb, x, n=n)))
    else:
        rows.append(("torch cuda", {"note": "no GPU on this machine"}))
    return rows, d


def graph_latency(ckpt: str, sim_seconds: float, rtf: float, threads: int) -> dict:
    """sim_node + policy_node for sim_seconds of simulated time; read latency and missed ticks."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from vla_rl_ros.graph import GraphRunner, load_graph
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, REFERENCE_TOPIC

    domain = 150 + os.getpid() % 50
    cfg = json.loads((Path(ckpt) / "config.json").read_text())["policy"]
    g = load_graph("policy_sim", {"checkpoint": ckpt, "real_time_factor": rtf, "episodes": 0,
                                  "image_width": cfg["image_size"], "image_height": cfg["image_size"],
                                  "threads": threads, "max_steps": 120})
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("bench_probe", context=ctx)
    refs, status = [], {}
    node.create_subscription(JointState, REFERENCE_TOPIC, lambda m: refs.append(m.header.frame_id), RELIABLE_QOS)
    node.create_subscription(String, "/vla/policy/status", lambda m: status.update(json.loads(m.data)), LATCHED_QOS)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    log_dir = tempfile.mkdtemp(prefix="bench_graph_")
    runner = GraphRunner(g, log_dir=log_dir, domain_id=domain).start()
    try:
        t_end = None
        ticks_wanted = int(sim_seconds * 10.0)
        deadline = time.monotonic() + 120 + sim_seconds / rtf * 2
        while time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.1)
            if runner.dead():
                raise RuntimeError(f"graph died: {runner.dead()}\n{runner.tail('policy_node')}")
            first = next((i for i, r in enumerate(refs) if r != "hold"), None)
            if first is not None and len(refs) - first >= ticks_wanted:
                t_end = time.monotonic()
                break
        t_stat = time.monotonic()
        while time.monotonic() - t_stat < 1.5:
            ex.spin_once(timeout_sec=0.1)
    finally:
        runner.stop()
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    first = next((i for i, r in enumerate(refs) if r != "hold"), len(refs))
    run = refs[first:]
    missed = sum(1 for r in run if r == "hold" or r.endswith(":hold"))
    return {"ticks": len(run), "missed": missed, "completed": t_end is not None, **status}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--graph-seconds", type=float, default=60.0, help="simulated seconds through the graph (0: skip)")
    ap.add_argument("--rtf", type=float, default=1.0)
    args = ap.parse_args()
    ckpt = resolve_checkpoint(args.policy)
    rows, d = backend_table(ckpt, args.threads, args.n)
    print(f"\nbatch-1 latency, {args.threads} threads, checkpoint {ckpt}")
    print(f"{'backend':28s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, r in rows:
        if "p50_ms" in r:
            print(f"{name:28s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}")
        else:
            print(f"{name:28s} {r['note']}")
    t = next(r for n, r in rows if n.startswith("torch eager (cpu)"))
    o = next(r for n, r in rows if n.startswith("onnxruntime"))
    print(f"ratio onnxruntime vs torch eager (p50): {t['p50_ms'] / o['p50_ms']:.2f}x faster")
    print(f"ONNX parity vs torch (batch 4): max |diff| = {d:.2e}")
    if args.graph_seconds > 0:
        g = graph_latency(ckpt, args.graph_seconds, args.rtf, 1)
        print(f"\nthrough the ROS graph (sim_node + policy_node, {g['ticks']} control ticks at 10 Hz, x{args.rtf}):")
        print(f"camera stamp -> chunk published: p50 {g.get('latency_p50_ms', float('nan')):.1f} ms, "
              f"p99 {g.get('latency_p99_ms', float('nan')):.1f} ms (backend {g.get('backend')})")
        print(f"missed control ticks (controller had no fresh target): {g['missed']} of {g['ticks']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
