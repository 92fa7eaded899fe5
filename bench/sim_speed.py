"""Simulation benchmark: physics steps/s, render fps per renderer and resolution, and collected
episodes per minute through the real ROS graph (sim + expert + logger).

    .venv/bin/python bench/sim_speed.py [--episodes 6] [--skip-collect]

Prints one table; every figure is measured in this run on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def physics_steps_per_s(seconds: float = 3.0) -> float:
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    w = PandaWorld(SimConfig(cameras=()))
    w.reset(seed=0)
    import pybullet as p

    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(240):
            p.stepSimulation(physicsClientId=w.client)
        n += 240
    rate = n / (time.perf_counter() - t0)
    w.close()
    return rate


def render_fps(renderer: str, size: int, frames: int = 30) -> tuple[str, float]:
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    w = PandaWorld(SimConfig(image_width=size, image_height=size, renderer=renderer))
    w.reset(seed=0)
    w.render("front")  # warm-up
    t0 = time.perf_counter()
    imgs = [w.render("front") for _ in range(frames)]
    fps = frames / (time.perf_counter() - t0)
    assert imgs[-1].shape == (size, size, 3) and np.ptp(imgs[-1]) > 0
    name = w.renderer_name
    w.close()
    return name, fps


def collect_rate(episodes: int, speed: float) -> tuple[float, str]:
    out = tempfile.mkdtemp(prefix="bench_collect_")
    cli = [sys.executable, "-m", "vla_rl_ros.cli", "collect", "--episodes", str(episodes),
           "--out", os.path.join(out, "ds"), "--real-time-factor", str(speed), "--domain-id", "177"]
    t0 = time.perf_counter()
    r = subprocess.run(cli, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if r.returncode != 0:
        return float("nan"), r.stdout[-2000:] + r.stderr[-2000:]
    return 60.0 * episodes / dt, ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--speed", type=float, default=3.0)
    ap.add_argument("--skip-collect", action="store_true")
    args = ap.parse_args()
    rows = [("physics (240 Hz steps)", f"{physics_steps_per_s():,.0f} steps/s",
             "")]
    for renderer in ("egl", "tiny"):
        for size in (96, 224):
            try:
                name, fps = render_fps(renderer, size)
                note = "" if name == renderer else f"(asked {renderer}, got {name})"
                rows.append((f"render {name} {size}x{size}", f"{fps:.1f} fps", note))
            except Exception as e:  # e.g. no EGL on this machine
                rows.append((f"render {renderer} {size}x{size}", "unavailable", str(e)[:60]))
    if not args.skip_collect:
        rate, err = collect_rate(args.episodes, args.speed)
        rows.append((f"collect via ROS graph ({args.episodes} ep, x{args.speed})",
                     f"{rate:.1f} episodes/min", err[:200]))
    w = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(w)}  value")
    for name, val, note in rows:
        print(f"{name.ljust(w)}  {val}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
