"""Gymnasium environment speed: random-action steps per second, single and vectorised.

    .venv/bin/python bench/gym_speed.py [--steps 1000] [--num-envs 2] [--env vla_rl_ros/PickCube-v0]

Each step is one control period (10 Hz of simulated time: 24 PyBullet substeps at 240 Hz) plus
one camera render. Rows, all measured in this run on this machine:
- one environment with the image and the instruction embedding (the default observation);
- one environment without the instruction embedding (no sentence encoder at reset);
- one environment with a 64 px image;
- one environment without an image (``image_size=0``: physics only, nothing rendered);
- ``make_vec`` in sync mode, and in async mode (one process per environment; the figure is
  environment steps per second summed over the environments).
Random actions are drawn uniformly inside the action space; an episode that ends is reset with
the next seed. Also printed: the simulated-time factor (simulated seconds per wall second).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vla_rl_ros.core.sim.world import SimConfig


def _single(env_id: str, steps: int, seed: int, **kwargs) -> tuple[float, int]:
    import gymnasium as gym

    import vla_rl_ros.envs  # noqa: F401  (registers the ids)

    env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    env.reset(seed=seed)
    resets, t0 = 0, time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(low, high).astype(np.float32))
        if terminated or truncated:
            resets += 1
            env.reset(seed=seed + resets)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate, resets


def _vector(env_id: str, steps: int, seed: int, num_envs: int, mode: str) -> float:
    import gymnasium as gym

    import vla_rl_ros.envs  # noqa: F401

    # async: spawn, not fork -- a fork after torch / the sentence encoder started their threads
    # deadlocks the worker at its first reset
    kw = {"vector_kwargs": {"context": "spawn"}} if mode == "async" else {}
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, **kw)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    n_iter = max(1, steps // num_envs)
    t0 = time.perf_counter()
    for _ in range(n_iter):  # vector envs reset finished sub-environments themselves
        envs.step(envs.action_space.sample())
    rate = n_iter * num_envs / (time.perf_counter() - t0)
    envs.close()
    return rate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="vla_rl_ros/PickCube-v0")
    ap.add_argument("--steps", type=int, default=1000, help="random steps per row")
    ap.add_argument("--num-envs", type=int, default=2, help="environments in the vectorised rows")
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args(argv)

    control_period_s = 1.0 / SimConfig().control_rate
    rows: list[tuple[str, float]] = []
    rate, resets = _single(args.env, args.steps, args.seed)
    rows.append((f"1 env, image 96 px + instruction embedding ({resets} resets)", rate))
    rate, resets = _single(args.env, args.steps, args.seed, instruction_embedding=False)
    rows.append((f"1 env, image 96 px, no embedding ({resets} resets)", rate))
    rate, resets = _single(args.env, args.steps, args.seed, instruction_embedding=False, image_size=64)
    rows.append((f"1 env, image 64 px, no embedding ({resets} resets)", rate))
    rate, resets = _single(args.env, args.steps, args.seed, instruction_embedding=False, image_size=0)
    rows.append((f"1 env, no image (physics only), no embedding ({resets} resets)", rate))
    for mode in ("sync", "async"):
        rows.append((f"make_vec {mode}, {args.num_envs} envs", _vector(args.env, args.steps, args.seed,
                                                                    args.num_envs, mode)))

    base = rows[0][1]
    print(f"\n{args.env}: {args.steps} random steps per row")
    print(f"| setting | steps/s | x row 1 | simulated s per wall s |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r:,.0f} | {r / base:.2f} | {r * control_period_s:.1f} |")


if __name__ == "__main__":
    main()
