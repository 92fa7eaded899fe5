"""Null control for RL results: is an RL update's change in success distinguishable from a
*random* change of the action head of the same size?

    .venv/bin/python bench/null_control.py --init models/vla_bc_v3 --reference runs/rl_g_s0/round_1/checkpoint \
        --draws 3 --episodes 100 [--out runs/null_control]

For each head tensor, the RL update Δ = θ_ref − θ_init is measured; each draw replaces it by a
random direction of the same norm (θ_init + ‖Δ‖·u/‖u‖, u Gaussian), exports the checkpoint (ONNX
included) and evaluates the noiseless policy on the same seeds as ``improve`` (1000…). Printed
side by side: init, reference (the RL result) and every random draw, with the mean shift of the
executed action token on the evaluation's first frames, so the two kinds of change are compared
at equal size. If the random draws move success as much as RL does, the RL result is within the
evaluation's sensitivity to *any* change of the head.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vla_rl_ros.core.policy.backends import export_onnx  # noqa: E402
from vla_rl_ros.core.policy.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vla_rl_ros.core.policy.evaluate import evaluate_parallel, success_by_family  # noqa: E402
from vla_rl_ros.core.robot import PANDA  # noqa: E402


def rate(ckpt: str, seeds, workers: int) -> dict:
    res = evaluate_parallel(ckpt, seeds, workers=workers)
    return {f: 100.0 * k / max(n, 1) for f, (k, n) in success_by_family(res).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", required=True)
    ap.add_argument("--reference", required=True, help="the RL-updated checkpoint whose update size is matched")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--eval-seed", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/null_control")
    args = ap.parse_args()
    init, cfg0 = load_checkpoint(args.init, joint_names=PANDA.joint_names)
    ref, _ = load_checkpoint(args.reference, joint_names=PANDA.joint_names)
    p0 = dict(init.head.named_parameters())
    delta = {k: (v.detach() - p0[k].detach()) for k, v in ref.head.named_parameters()}
    norm = sum(float(d.norm() ** 2) for d in delta.values()) ** 0.5
    if norm == 0:
        print("error: the reference's head equals the init's (no RL update to match)", file=sys.stderr)
        return 2
    seeds = list(range(args.eval_seed, args.eval_seed + args.episodes))
    out = Path(args.out)
    rows = [("init", args.init, 0.0), ("reference (RL)", args.reference, norm)]
    g = torch.Generator().manual_seed(args.seed)
    for i in range(args.draws):
        model, _ = load_checkpoint(args.init, joint_names=PANDA.joint_names)
        with torch.no_grad():
            for k, p in model.head.named_parameters():
                u = torch.randn(p.shape, generator=g)
                p.add_(u * (float(delta[k].norm()) / float(u.norm().clamp(min=1e-12))))
        d = out / f"draw_{i}"
        d.mkdir(parents=True, exist_ok=True)
        onnx = export_onnx(model, d / "model.onnx")
        save_checkpoint(model, d / "checkpoint", version=int(cfg0.get("version", 0)) + 1,
                        meta={"null_control": {"init": args.init, "reference": args.reference, "draw": i}},
                        instructions=cfg0.get("instructions"), extra_files={"model.onnx": onnx})
        rows.append((f"random draw {i}", str(d / "checkpoint"), norm))
    results = []
    print(f"head update norm to match: {norm:.4f}; {len(seeds)} evaluation seeds from {seeds[0]}")
    print(f"{'policy':>16}  {'pick':>6}  {'push':>6}  {'place':>6}  {'overall':>7}  {'seconds':>7}")
    for name, ck, _ in rows:
        t0 = time.time()
        r = rate(ck, seeds, args.workers)
        results.append({"policy": name, "checkpoint": ck, **r})
        print(f"{name:>16}  {r.get('pick', 0):6.1f}  {r.get('push', 0):6.1f}  {r.get('place', 0):6.1f}  "
              f"{r['overall']:7.1f}  {time.time() - t0:7.0f}", flush=True)
    base = results[0]["overall"]
    rnd = [r["overall"] - base for r in results[2:]]
    print(f"change vs init: RL {results[1]['overall'] - base:+.1f} points; random draws "
          + ", ".join(f"{x:+.1f}" for x in rnd))
    (out / "null_control.json").write_text(json.dumps({"norm": norm, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
