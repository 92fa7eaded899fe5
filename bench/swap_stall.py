"""Where a hot swap's load spends its time, and how long it stalls inference in the same process.

    .venv/bin/python bench/swap_stall.py [--policy CKPT] [--rate 20]

ROS-free reproduction of the policy node's threads: an inference loop at ``--rate`` Hz (the
node's inference thread) and a GIL-holding "executor" loop (the rclpy callbacks) run while
``HotSwapper.request`` loads a candidate checkpoint the way the node does. Prints the load's
phases (checksums + weights, finite probe, ONNX export when the checkpoint ships none, ONNX
Runtime session, probe inferences) and the longest gap of the inference loop with and without a
load running.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(mod, name, phases):
    fn = getattr(mod, name)

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            phases.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)

    setattr(mod, name, wrapper)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--small", action="store_true", help="the hot-swap test's small model instead of --policy")
    args = ap.parse_args()

    from vla_rl_ros.core.policy import runtime as R
    from vla_rl_ros.core.policy.checkpoint import load_checkpoint, save_checkpoint
    from vla_rl_ros.core.robot import PANDA

    tmp = Path(tempfile.mkdtemp(prefix="swap_stall_"))
    if args.small:
        from tests.core.test_policy import small_model

        table = {"pick up the red cube": np.ones(384).tolist()}
        base = save_checkpoint(small_model(0), tmp / "v7", version=7, instructions=table)
        cands = [save_checkpoint(small_model(s), tmp / f"v{s + 7}", version=s + 7) for s in (1, 2)]
    else:
        from vla_rl_ros.nodes.policy_node import DEFAULT_CHECKPOINT

        base = Path(args.policy or DEFAULT_CHECKPOINT)
        model, cfg = load_checkpoint(base)
        # one candidate without model.onnx (exported on load), one with
        cands = [save_checkpoint(model, tmp / "noonnx", version=50, instructions=cfg["instructions"]),
                 save_checkpoint(model, tmp / "onnx", version=51, instructions=cfg["instructions"],
                                 extra_files={"model.onnx": base / "model.onnx"})]
    phases: dict = {}
    for name in ("load_checkpoint", "probe_outputs_finite", "onnx_for", "make_backend"):
        timed(R, name, phases)
    rt = R.PolicyRuntime(base, backend="onnxruntime", joint_names=PANDA.joint_names, threads=1,
                         onnx_cache_dir=str(tmp / "cache"))
    sw = R.HotSwapper(rt)
    cfg = rt.cfg
    obs = R.Observation({c: np.full((cfg.image_size, cfg.image_size, 3), 100, np.uint8) for c in cfg.cameras},
                        PANDA.home.copy(), next(iter(rt.config["instructions"]), "pick up the red cube"))
    stop = threading.Event()
    gaps: list[tuple[float, float]] = []

    def infer_loop():
        period, last = 1.0 / args.rate, time.perf_counter()
        while not stop.is_set():
            sw.active().infer(obs)
            now = time.perf_counter()
            gaps.append((now, now - last))
            last = now
            time.sleep(max(0.0, period - (time.perf_counter() - now)))

    def executor_loop():  # rclpy callbacks: short Python work at a few hundred Hz
        while not stop.is_set():
            sum(range(2000))
            time.sleep(0.002)

    ths = [threading.Thread(target=f, daemon=True) for f in (infer_loop, executor_loop)]
    for t in ths:
        t.start()
    time.sleep(args.seconds)
    quiet = max(g for _, g in gaps) * 1e3
    for c in cands:
        phases.clear()
        t0 = time.perf_counter()
        sw.request(str(c)).join()
        t1 = time.perf_counter()
        during = [g for t, g in gaps if t0 <= t <= t1 + 0.2]
        print(f"{Path(c).name}: load {1e3 * (t1 - t0):.0f} ms; phases (ms): "
              + ", ".join(f"{k} {sum(v):.0f}" for k, v in phases.items())
              + f"; longest inference gap during the load {1e3 * max(during, default=0):.0f} ms "
              f"(nominal {1e3 / args.rate:.0f}, {quiet:.0f} without a load)")
        time.sleep(1.0)
    stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
