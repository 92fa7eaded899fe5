"""One-command device check (issue 22, item 4): inference latency per backend and training steps
per second, CPU and GPU side by side in one run, in well under 5 minutes.

    bash bench/gpu_check.sh [--policy models/vla_bc_v4] [--n 300] [--json out.json]

Needs only torch (+ onnxruntime / safetensors when present): no ROS, no simulator, no dataset, so
it runs on a bare GPU box with PyTorch. Rows:

- batch-1 latency p50 / p99 of the policy's ``infer`` (what a control tick waits for): torch eager
  on the CPU, ONNX Runtime (CUDA execution provider when onnxruntime-gpu is installed, else CPU),
  torch eager on the GPU, the same captured as a CUDA graph (``CudaGraphBackend``: what
  ``backend: auto`` serves on a GPU);
- batch throughput (chunks/s) at ``--batch``: what evaluation and the world model's imagination pay;
- BC training steps per second (the ``train-bc`` step: prefix + action head + masked L1 + AdamW on
  a batch of ``--train-batch``), on the CPU and on the GPU (fp32, and bf16 autocast).

Without a GPU every GPU row says so and the CPU rows still print: that is the CPU fallback the
test runs. Output: a markdown table, and ``--json`` the same figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.core.policy.backends import (  # noqa: E402
    BackendUnavailable,
    CudaGraphBackend,
    OnnxRuntimeBackend,
    TorchBackend,
    example_inputs,
    export_onnx,
    latency,
    parity,
)
from vla_rl_ros.core.policy.bc import masked_l1  # noqa: E402
from vla_rl_ros.core.policy.checkpoint import load_checkpoint  # noqa: E402
from vla_rl_ros.core.robot import PANDA  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def throughput(model, device: str, batch: int, seconds: float) -> float:
    """Chunks per second at ``batch`` (inference mode, synchronised)."""
    dev = torch.device(device)
    x = [t.to(dev) for t in example_inputs(model.cpu(), batch=batch, seed=2)]
    model = model.to(dev).eval()
    with torch.inference_mode():
        model(*x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(*x)
            done += batch
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return done / (time.perf_counter() - t0)


def train_steps_per_s(model, device: str, batch: int, steps: int, bf16: bool = False) -> float:
    """The train-bc optimisation step on a synthetic batch of the checkpoint's shapes."""
    dev = torch.device(device)
    model = model.to(dev).train()
    cfg = model.cfg
    g = torch.Generator().manual_seed(3)
    img = torch.randint(0, 256, (batch, len(cfg.cameras), cfg.image_size, cfg.image_size, 3), dtype=torch.uint8,
                        generator=g).to(dev)
    st = (model.state_mean.cpu()[None] + 0.1 * torch.randn(batch, cfg.state_dim, generator=g)).to(dev)
    lg = torch.nn.functional.normalize(torch.randn(batch, cfg.lang_dim, generator=g), dim=-1).to(dev)
    delta = (0.05 * torch.randn(batch, cfg.horizon, cfg.action_dim, generator=g)).to(dev)
    mask = torch.ones(batch, cfg.horizon, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model.head(model.prefix(img, st, lg))
            loss = masked_l1(pred.float(), (delta - model.delta_mean) / model.delta_std, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available()
    gpu_name = torch.cuda.get_device_name(0) if gpu else None
    fresh = lambda: load_checkpoint(args.policy, joint_names=PANDA.joint_names)[0]  # noqa: E731
    model = fresh()
    x1 = example_inputs(model, batch=1, seed=0)
    res: dict = {"policy": str(args.policy), "threads": args.threads, "gpu": gpu_name, "torch": torch.__version__,
                 "latency": {}, "throughput": {}, "train": {}}
    lat, thr, tr = res["latency"], res["throughput"], res["train"]
    cpu = TorchBackend(model, threads=args.threads)
    lat["torch eager (cpu)"] = latency(cpu, x1, n=args.n, warmup=10)
    onnx = Path(args.policy) / "model.onnx"
    try:
        if not onnx.is_file():
            onnx = export_onnx(model, Path(tempfile.mkdtemp()) / "model.onnx")
        ob = OnnxRuntimeBackend(onnx, threads=args.threads)
        lat[f"onnxruntime ({ob.providers[0]})"] = latency(ob, x1, n=args.n, warmup=10)
        res["onnx_parity"] = parity(cpu, ob, example_inputs(model, batch=4, seed=1))
    except (BackendUnavailable, ImportError) as e:
        lat["onnxruntime"] = {"note": f"unavailable: {e}"}
    thr["torch (cpu)"] = throughput(fresh(), "cpu", args.batch, args.seconds)
    tr["cpu fp32"] = train_steps_per_s(fresh(), "cpu", args.train_batch, args.train_steps)
    if gpu:
        gb = TorchBackend(fresh(), device="cuda")
        lat["torch eager (cuda)"] = latency(gb, x1, n=args.n, warmup=20)
        res["cuda_parity"] = parity(cpu, gb, example_inputs(model, batch=4, seed=1))
        cg = CudaGraphBackend(fresh())
        lat["torch cuda graph"] = latency(cg, x1, n=args.n, warmup=20)
        res["cuda_graph_parity"] = parity(cpu, cg, example_inputs(model, batch=4, seed=1))
        thr["torch (cuda)"] = throughput(fresh(), "cuda", args.batch, args.seconds)
        tr["cuda fp32"] = train_steps_per_s(fresh(), "cuda", args.train_batch, args.train_steps * 10)
        tr["cuda bf16 autocast"] = train_steps_per_s(fresh(), "cuda", args.train_batch, args.train_steps * 10, bf16=True)
    else:
        note = {"note": "no GPU on this machine (CPU-only figures above)"}
        lat["torch eager (cuda)"] = lat["torch cuda graph"] = note
        thr["torch (cuda)"] = tr["cuda fp32"] = tr["cuda bf16 autocast"] = note
    return res


def table(res: dict, args) -> str:
    out = [f"policy {res['policy']}, torch {res['torch']}, {res['threads']} CPU threads, GPU: {res['gpu'] or 'none'}",
           "", "| batch-1 infer | p50 ms | p99 ms |", "|---|---|---|"]
    for k, v in res["latency"].items():
        out.append(f"| {k} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} |" if "p50_ms" in v else f"| {k} | {v['note']} | |")
    out += ["", f"| throughput, batch {args.batch} | chunks/s |", "|---|---|"]
    for k, v in res["throughput"].items():
        out.append(f"| {k} | {v:,.0f} |" if isinstance(v, float) else f"| {k} | {v['note']} |")
    out += ["", f"| train-bc step, batch {args.train_batch} | steps/s | x cpu |", "|---|---|---|"]
    base = res["train"]["cpu fp32"]
    for k, v in res["train"].items():
        out.append(f"| {k} | {v:,.1f} | {v / base:.1f} |" if isinstance(v, float) else f"| {k} | {v['note']} | |")
    for k in ("onnx_parity", "cuda_parity", "cuda_graph_parity"):
        if k in res:
            out.append(f"\n{k.replace('_', ' ')} vs torch cpu (batch 4): max |diff| = {res[k]:.2e}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=str(ROOT / "models" / "vla_bc_v4"))
    ap.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--n", type=int, default=300, help="timed batch-1 calls per backend")
    ap.add_argument("--batch", type=int, default=256, help="batch of the throughput rows")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per throughput row")
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=10, help="timed CPU steps (x10 on the GPU)")
    ap.add_argument("--json", default="", help="also write the figures here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(args)
    res["wall_s"] = time.perf_counter() - t0
    print(table(res, args))
    print(f"\n(check took {res['wall_s']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
