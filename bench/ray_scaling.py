"""Episodes per minute of direct evaluation (``evaluate_parallel``: the shipped checkpoint, the
deployed loop) serial, over worker processes and over Ray actors, on the same seeds, side by side.

    .venv/bin/python bench/ray_scaling.py [--episodes 24] [--max-steps 120] [--processes 2]
        [--ray-workers 1 2 4] [--address ADDRESS] [--checkpoint models/vla_bc_v4]

Rows: the serial loop (this process, as ``evaluate --direct``), a ProcessPool of ``--processes``
(``evaluate --direct --workers N``), then Ray with each of ``--ray-workers`` actors (``--ray``: a
local Ray started per row with that many CPUs, or the cluster at ``--address``). Every row runs
the same seeds and must give the same per-episode outcomes (checked). Wall time includes
starting the workers (process spawn, torch/ONNX import, Ray start and shipping the checkpoint
through the object store), not ``ray.init`` (its own column: once per process in a verb);
``first`` is the time to the first episode. Scaling efficiency:
(rate / serial rate) / workers.

A cluster on one machine (a head plus a worker node: two raylets, each with its own CPUs; with
one CPU each, the 2 actors of ``--ray-workers 2`` run on different nodes):

    export RAY_AUTH_MODE=token   # Ray 2.60's head uses token auth; every node and the driver must agree
    .venv/bin/ray start --head --port=6379 --num-cpus=1 --include-dashboard=false
    .venv/bin/ray start --address=127.0.0.1:6379 --num-cpus=1
    .venv/bin/python bench/ray_scaling.py --address 127.0.0.1:6379 --ray-workers 1 2
    .venv/bin/ray stop

On real machines: ``ray start --head`` on one, ``ray start --address=HEAD_IP:6379`` on the others
(the same environment on every node: ``scripts/setup_env.sh``; ``RAY_AUTH_MODE=token`` everywhere
and the head's token, ``ray get-auth-token``, in ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token`` on the
others), then ``--address HEAD_IP:6379`` (or ``auto`` on the head). The actors spread over the
nodes' CPUs; the checkpoint's files travel through the object store, so the other nodes need no
copy of ``models/``. Without the ``RAY_AUTH_MODE=token`` the second ``ray start`` fails with
``InvalidAuthToken``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _serial(ckpt: str, seeds: list[int], max_steps: int):
    import torch

    from vla_rl_ros.core.policy.evaluate import evaluate
    from vla_rl_ros.core.policy.factory import open_runtime
    from vla_rl_ros.core.policy.runtime import Observation
    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    torch.set_num_threads(1)
    first = []
    t0 = time.monotonic()
    rt = open_runtime(ckpt, backend="onnxruntime", joint_names=PANDA.joint_names, threads=1)
    size = rt.cfg.image_size
    with PandaWorld(SimConfig(image_width=size, image_height=size, cameras=rt.cameras, max_steps=max_steps,
                              renderer="tiny")) as world:
        act = lambda o: rt.infer(Observation(o["images"], o["state"], o["instruction"]))  # noqa: E731
        res = evaluate(world, act, seeds, progress=lambda r, dt: first or first.append(time.monotonic() - t0))
    return res, time.monotonic() - t0, first[0]


def _parallel(ckpt: str, seeds: list[int], max_steps: int, workers: int, address: str | None):
    from vla_rl_ros.core.policy.evaluate import evaluate_parallel

    first = []
    t0 = time.monotonic()
    res = evaluate_parallel(ckpt, seeds, workers=workers, max_steps=max_steps, ray_address=address,
                            progress=lambda r, dt: first or first.append(time.monotonic() - t0))
    return res, time.monotonic() - t0, first[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="", help="checkpoint (default: the shipped one)")
    ap.add_argument("--episodes", type=int, default=24)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--max-steps", type=int, default=120)
    ap.add_argument("--processes", type=int, default=2, help="workers of the ProcessPool row (0: no row)")
    ap.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--address", default="local", help="Ray: local (started per row) or a cluster's address")
    args = ap.parse_args()

    from vla_rl_ros.core.parallel import ensure_ray
    from vla_rl_ros.core.paths import checkpoint_or_default

    ckpt = str(Path(checkpoint_or_default(args.checkpoint)).resolve())
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    print(f"{args.episodes} episodes (seeds {seeds[0]}..{seeds[-1]}, max {args.max_steps} steps) of {ckpt}; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    rows = []  # (label, workers, seconds, first, results, Ray start)

    def row(label, workers, fn, start=0.0):
        res, dt, t_first = fn()
        rows.append((label, workers, dt, t_first, res, start))
        print(f"  {label}: {dt:.1f}s ({60 * len(res) / dt:.1f} episodes/min)", flush=True)

    row("serial (1 process)", 1, lambda: _serial(ckpt, seeds, args.max_steps))
    if args.processes:
        row(f"ProcessPool {args.processes}", args.processes,
            lambda: _parallel(ckpt, seeds, args.max_steps, args.processes, None))
    for n in args.ray_workers:
        import ray

        where = "local" if args.address in ("", "local") else args.address
        t0 = time.monotonic()
        ensure_ray(args.address, n)
        start = time.monotonic() - t0
        try:
            row(f"Ray {where} {n}", n, lambda: _parallel(ckpt, seeds, args.max_steps, n, args.address), start)
        finally:
            ray.shutdown()  # a local Ray is restarted with the next row's CPU count

    base = rows[0]
    ref = [r.__dict__ for r in base[4]]
    head = ("run", "workers", "ray.init s", "wall s", "first ep s", "episodes/min", "speed-up", "efficiency", "same outcomes")
    table = [head]
    for label, w, dt, t_first, res, start in rows:
        rate = 60 * len(res) / dt
        speed = rate / (60 * len(base[4]) / base[2])
        table.append((label, str(w), f"{start:.1f}" if start else "-", f"{dt:.1f}", f"{t_first:.1f}", f"{rate:.1f}", f"{speed:.2f}x",
                      f"{100 * speed / w:.0f}%", "yes" if [r.__dict__ for r in res] == ref else "NO"))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(wd) for c, wd in zip(r, widths)) + " |" for r in table]
    lines.insert(1, "|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    print("\n" + "\n".join(lines))
    print(f"\nsuccess {sum(r.success for r in base[4])}/{len(base[4])} in every row; "
          f"load after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0 if all(t[-1] == "yes" for t in table[1:]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
