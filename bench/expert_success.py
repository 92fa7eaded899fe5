"""Scripted-expert success rate per task family, in simulation, without ROS or rendering.

    .venv/bin/python bench/expert_success.py [--episodes 50] [--families pick push place]
        [--seed 0] [--noise 0.0] [--execute 1 --horizon 4] [--min 0.9]

Runs the expert on ``--episodes`` seeded episodes per family (seeds ``seed .. seed+N-1``; the
expert sees only the joint state, the object poses and the instruction string) and prints one
table: successes, success rate, mean episode length (all episodes and successful ones, control
steps at the world's control rate) and wall time. ``--execute k`` executes k rows of every
planned chunk before re-planning (chunked control as in the ROS graph). Exit status 1 if any
family's success rate is below ``--min``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.core.sim.expert import ScriptedExpert  # noqa: E402
from vla_rl_ros.core.sim.tasks import FAMILIES  # noqa: E402
from vla_rl_ros.core.sim.world import PandaWorld, SimConfig  # noqa: E402


def run_family(world, expert, family, seeds, execute, horizon, dt):
    """Run one family over ``seeds``; returns a list of (success, steps) per episode."""
    out = []
    for seed in seeds:
        world.reset(seed=seed, family=family)
        expert.reset(world.task.instruction)
        info = None
        while info is None or not info.done:
            q, poses = world.joint_positions(), world.object_poses()
            if execute == 1:
                rows = [expert.act(q, poses, dt)]
            else:
                rows = expert.plan_chunk(q, poses, max(horizon, execute), dt)[:execute]
            for a in rows:
                world.apply_action(a)
                info = world.step_control()
                if info.done:
                    break
        out.append((bool(info.success), int(info.step)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=50, help="episodes per family")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--noise", type=float, default=0.0, help="expert noise_std (rad, arm joints)")
    ap.add_argument("--execute", type=int, default=1, help="rows of each chunk executed")
    ap.add_argument("--horizon", type=int, default=4, help="chunk length when --execute > 1")
    ap.add_argument("--max-steps", type=int, default=120)
    ap.add_argument("--min", type=float, default=0.9, help="minimum success rate per family")
    args = ap.parse_args(argv)
    if args.episodes < 1 or args.execute < 1:
        ap.error("--episodes and --execute must be >= 1")

    cfg = SimConfig(cameras=(), renderer="tiny", max_steps=args.max_steps)
    world = PandaWorld(cfg)
    expert = ScriptedExpert(noise_std=args.noise, seed=args.seed)
    dt = 1.0 / cfg.control_rate
    seeds = range(args.seed, args.seed + args.episodes)
    rows, failed = [], []
    t_all = time.perf_counter()
    for fam in args.families:
        t0 = time.perf_counter()
        res = run_family(world, expert, fam, seeds, args.execute, args.horizon, dt)
        wall = time.perf_counter() - t0
        ok = [s for s, _ in res]
        lens = [n for _, n in res]
        ok_lens = [n for s, n in res if s]
        rate = float(np.mean(ok))
        rows.append((fam, len(res), sum(ok), rate, np.mean(lens), np.mean(ok_lens) if ok_lens else float("nan"), wall))
        if rate < args.min:
            failed.append(fam)
            bad = [seed for seed, (s, _) in zip(seeds, res) if not s]
            print(f"# {fam}: failed seeds {bad[:20]}", file=sys.stderr)
    world.close()
    expert.close()
    total = time.perf_counter() - t_all

    print(
        f"scripted expert: {args.episodes} episodes/family, seeds {args.seed}..{args.seed + args.episodes - 1}, "
        f"noise_std={args.noise}, execute={args.execute}, control {cfg.control_rate:g} Hz, "
        f"max {cfg.max_steps} steps"
    )
    head = f"{'family':<8} {'episodes':>8} {'success':>8} {'rate':>7} {'mean len':>9} {'len (ok)':>9} {'wall s':>8}"
    print(head)
    print("-" * len(head))
    for fam, n, k, rate, ml, mlo, wall in rows:
        print(f"{fam:<8} {n:>8} {k:>8} {100 * rate:>6.1f}% {ml:>9.1f} {mlo:>9.1f} {wall:>8.1f}")
    print("-" * len(head))
    n_all = sum(r[1] for r in rows)
    k_all = sum(r[2] for r in rows)
    print(f"{'overall':<8} {n_all:>8} {k_all:>8} {100 * k_all / n_all:>6.1f}% {'':>9} {'':>9} {total:>8.1f}")
    if failed:
        print(f"FAIL: below --min {args.min:.2f}: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
