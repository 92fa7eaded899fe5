"""World-model throughput: imagined transitions per second, batched, on this machine's CPU (and
on the GPU when one is present), side by side with the real simulator's control ticks per second.

    .venv/bin/python bench/wm_throughput.py [--model runs/wm_v4/model] [--checkpoint models/vla_bc_v4]
                                            [--threads 2] [--batches 1 64 512 4096]

One imagined transition = one chunk of k ticks: the ensemble's step (all members), the reward and
the disagreement, as ``train-rl --advantage world_model`` / ``--objective best_of_k`` call them.
Without ``--model`` an untrained model of the default size is timed (the cost does not depend on
the weights).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.core.paths import checkpoint_or_default  # noqa: E402
from vla_rl_ros.core.policy.checkpoint import load_checkpoint  # noqa: E402
from vla_rl_ros.core.robot import PANDA  # noqa: E402
from vla_rl_ros.core.wm.config import WMConfig  # noqa: E402
from vla_rl_ros.core.wm.latent import LatentWorldModel, _networks  # noqa: E402


def untrained(policy, cfg: WMConfig) -> LatentWorldModel:
    F = 2 * policy.cfg.d_model
    stats = {"pca_mean": torch.zeros(F), "pca_components": torch.randn(F, cfg.latent_pca) / F ** 0.5,
             "pca_scale": torch.ones(cfg.latent_pca), "dz_std": torch.ones(cfg.latent_pca + policy.cfg.state_dim),
             "r_mean": torch.tensor(0.0), "r_std": torch.tensor(1.0), "v_mean": torch.tensor(0.0),
             "v_std": torch.tensor(1.0)}
    dyn, heads = _networks(cfg, cfg.latent_pca + policy.cfg.state_dim, policy.cfg.action_dim)
    return LatentWorldModel(policy, cfg, stats, dyn, heads)


def imagined_per_second(wm, B: int, device: str, min_seconds: float = 1.0) -> float:
    z = torch.randn(B, wm.P + wm.policy.cfg.state_dim)
    chunk = wm.state_of(z)[:, None, : wm.action_dim].repeat(1, wm.chunk_len, 1) + 0.01 * torch.randn(B, wm.chunk_len,
                                                                                                     wm.action_dim)
    z, chunk = z.to(device), chunk.to(device)
    n, t0 = 0, time.perf_counter()
    while True:
        wm.step(z, chunk)
        wm.reward(z, chunk)
        wm.uncertainty(z, chunk)
        if device != "cpu":
            torch.cuda.synchronize()
        n += B
        if time.perf_counter() - t0 > min_seconds:
            return n / (time.perf_counter() - t0)


def to_device(wm: LatentWorldModel, device: str) -> LatentWorldModel:
    wm.dynamics.to(device)
    wm.heads.to(device)
    wm.stats = {k: v.to(device) for k, v in wm.stats.items()}
    wm.policy.to(device)
    return wm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="a world model folder from train-wm (default: untrained, default size)")
    ap.add_argument("--checkpoint", default="", help="its policy checkpoint (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512, 4096])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy, _ = load_checkpoint(checkpoint_or_default(args.checkpoint), joint_names=PANDA.joint_names)
    wm = LatentWorldModel.load(args.model, policy) if args.model else untrained(policy, WMConfig(data=("-",)))
    k = wm.chunk_len
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"world model: {args.model or 'untrained, default size'}; {wm.cfg.members} members, hidden {wm.cfg.hidden}, "
          f"latent {wm.P + policy.cfg.state_dim}, chunk {k} ticks; torch threads {args.threads}")
    print(f"{'device':>6} {'batch':>6} {'transitions/s':>14} {'ticks/s':>12}")
    best = 0.0
    for dev in devices:
        m = to_device(wm, dev)
        for B in args.batches:
            r = imagined_per_second(m, B, dev)
            if dev == "cpu":
                best = max(best, r)
            print(f"{dev:>6} {B:>6} {r:>14,.0f} {r * k:>12,.0f}")
    to_device(wm, "cpu")
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    world = PandaWorld(SimConfig(image_width=96, image_height=96, renderer="tiny"))  # as collect --direct
    try:
        world.reset(seed=0)
        q = world.joint_positions()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            world.observe(render=True)
            world.apply_action(np.asarray(q))
            world.step_control()
            n += 1
        sim = n / (time.perf_counter() - t0)
    finally:
        world.close()
    print(f"\nreal simulator (PyBullet, one 96 px TinyRenderer image per tick, one process, no policy): {sim:,.0f} ticks/s")
    print(f"imagined / simulated ticks per second (CPU, best batch): {best * k / sim:,.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
