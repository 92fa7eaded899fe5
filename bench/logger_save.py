#!/usr/bin/env python3
"""Benchmark: what saving an episode costs the trajectory_logger's process.

Prints, for a 300-frame episode with one 224x224 camera (dof 8, the full RL schema):

  (a) how long ``EpisodeWriter.submit()`` blocks the caller,
  (b) the max stall of a 30 Hz timer loop running in the submitting process while the episode
      is saved in the background (and how many ticks were late), next to the same loop's
      noise floor with no save going on,
  (c) the background save time per episode (and submit -> saved latency),
  (d) what a plain synchronous LeRobot user pays: ``add_frame`` x 300 + ``save_episode``
      (+ ``finalize``), and the ratio (d) / (a),

for the worker as a separate process (default) and as a thread, so the choice is measured.

    python bench/logger_save.py [--frames 300] [--size 224] [--episodes 3] [--modes process thread]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.core.data import schema as S
from vla_rl_ros.core.data.schema import make_features
from vla_rl_ros.core.data.writer import EpisodeWriter

DOF = 8
PERIOD = 1.0 / 30.0
LATE_MS = 5.0  # a tick woken more than this late counts as late


def make_episode(n: int, size: int, seed: int) -> list[dict]:
    """Camera-like frames (smooth scene + sensor noise, moving), not trivially compressible."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    frames = []
    for i in range(n):
        base = np.stack([(x + 2 * i) % 256, (y + i) % 256, ((x + y) // 2 + 3 * i) % 256], -1)
        img = (base + rng.integers(0, 12, (size, size, 3))).astype(np.uint8)
        frames.append({
            S.image_key("front"): img,
            S.STATE: rng.normal(size=DOF).astype(np.float32),
            S.ACTION: rng.normal(size=DOF).astype(np.float32),
            S.ACTION_MEAN: rng.normal(size=DOF).astype(np.float32),
            S.SIGMA: np.full(DOF, 0.05, np.float32),
            S.LOG_PROB: np.float32(rng.normal()),
            S.CHUNK_ID: 1_700_000_000_000_000_000 + (i // 10) * 333_000_000,
            S.CHUNK_INDEX: i % 10,
            S.POLICY_VERSION: 1,
            S.REWARD: np.float32(i == n - 1),
            S.DONE: i == n - 1,
            S.SUCCESS: i == n - 1,
        })
    return frames


def timer_loop(stop: threading.Event, lateness: list[float], work=None) -> None:
    """A 30 Hz loop in the calling thread: records how late each tick wakes up (s)."""
    t_next = time.perf_counter() + PERIOD
    while not stop.is_set():
        now = time.perf_counter()
        if now < t_next:
            time.sleep(t_next - now)
        woke = time.perf_counter()
        lateness.append(woke - t_next)
        if work is not None:
            work()
        t_next += PERIOD
        if woke - t_next > PERIOD:  # fell behind by more than a tick: resynchronise
            t_next = woke + PERIOD


def loop_stats(lat: list[float]) -> str:
    a = np.asarray(lat) * 1e3
    if a.size == 0:
        return "no ticks"
    return (f"max {a.max():6.1f} ms  p99 {np.percentile(a, 99):5.1f} ms  "
            f"late(>{LATE_MS:.0f} ms) {int((a > LATE_MS).sum())}/{a.size}  "
            f"missed(>{PERIOD * 1e3:.0f} ms) {int((a > PERIOD * 1e3).sum())}")


def noise_floor(seconds: float) -> list[float]:
    stop, lat = threading.Event(), []
    threading.Timer(seconds, stop.set).start()
    timer_loop(stop, lat)
    return lat


def bench_writer(mode: str, episodes: list[list[dict]], workdir: Path) -> dict:
    root = workdir / f"ds_{mode}"
    feats = make_features([f"j{i}" for i in range(DOF)], ["front"], episodes[0][0][S.image_key("front")].shape[:2])
    w = EpisodeWriter(root, fps=30, features=feats, mode=mode)
    # warm-up: first save pays the imports (lerobot, torch) in the worker
    w.submit(episodes[0], task="warm up")
    w.wait(300)
    submit_ms, saves, lats, stall = [], [], [], []
    for k, ep in enumerate(episodes):
        stop, lat = threading.Event(), []
        saved_before = len(w.saved_episodes())

        state = {"i": 0, "after": 0}

        def tick(k=k, ep=ep, state=state, stop=stop, saved_before=saved_before):
            state["i"] += 1
            if state["i"] == 15:  # submit from inside a tick, like a ROS callback would
                t0 = time.perf_counter()
                w.submit(ep, task=f"bench episode {k}")
                submit_ms.append((time.perf_counter() - t0) * 1e3)
            if state["i"] > 15 and len(w.saved_episodes()) > saved_before:
                state["after"] += 1
                if state["after"] > 15:  # keep ticking 0.5 s after the save, then stop
                    stop.set()

        timer_loop(stop, lat, tick)
        stall.extend(lat)
        s = w.saved_episodes()[-1]
        saves.append(s.seconds)
        lats.append(s.latency)
    w.close(120)
    return {"submit_ms": submit_ms, "save_s": saves, "latency_s": lats, "loop": stall}


def bench_direct(episodes: list[list[dict]], workdir: Path) -> list[float]:
    """Plain LeRobot: add_frame x N + save_episode (+ finalize) in the caller, synchronously."""
    import datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    datasets.disable_progress_bars()
    root = workdir / "ds_direct"
    feats = make_features([f"j{i}" for i in range(DOF)], ["front"], episodes[0][0][S.image_key("front")].shape[:2])
    ds = LeRobotDataset.create("bench/direct", 30, feats, root=root, robot_type="panda", use_videos=False)
    times = []
    for k, ep in enumerate(episodes):
        t0 = time.perf_counter()
        for fr in ep:
            f = {}
            for key, v in fr.items():
                ft = feats[key]
                if S.is_scalar(ft):  # lerobot's own convention: 1-element arrays
                    f[key] = np.array([v], dtype=ft["dtype"])
                elif ft["dtype"] == "float32":
                    f[key] = np.asarray(v, np.float32)
                else:
                    f[key] = v
            f["task"] = f"direct {k}"
            ds.add_frame(f)
        ds.save_episode()
        if k == len(episodes) - 1:
            ds.finalize()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["process", "thread"], choices=["process", "thread"])
    ap.add_argument("--no-direct", action="store_true")
    args = ap.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    episodes = [make_episode(args.frames, args.size, s) for s in range(args.episodes)]
    mb = sum(v.nbytes for fr in episodes[0] for v in fr.values() if isinstance(v, np.ndarray)) / 1e6
    print(f"episode: {args.frames} frames, 1 camera {args.size}x{args.size}, dof {DOF} "
          f"({mb:.0f} MB raw); {os.cpu_count()} CPUs; {args.episodes} timed episodes per mode\n")
    floor = noise_floor(3.0)
    print(f"30 Hz loop, idle process (noise floor):   {loop_stats(floor)}")

    workdir = Path(tempfile.mkdtemp(prefix="bench_logger_"))
    results = {}
    try:
        for mode in args.modes:
            r = bench_writer(mode, episodes, workdir)
            results[mode] = r
            print(f"\n[EpisodeWriter mode={mode}]")
            print(f"  (a) submit() blocks:          median {statistics.median(r['submit_ms']):6.2f} ms   "
                  f"max {max(r['submit_ms']):6.2f} ms")
            print(f"  (b) 30 Hz loop during saves:  {loop_stats(r['loop'])}")
            print(f"  (c) background save/episode:  median {statistics.median(r['save_s']):6.2f} s   "
                  f"(submit->saved latency median {statistics.median(r['latency_s']):.2f} s)")
        if not args.no_direct:
            d = bench_direct(episodes, workdir)
            print("\n[plain LeRobot, synchronous in the caller]")
            print(f"  (d) add_frame x{args.frames} + save_episode: median {statistics.median(d):6.2f} s   "
                  f"(per episode: {', '.join(f'{x:.2f}' for x in d)} s) -> the caller is blocked that long")
            for mode, r in results.items():
                ratio = statistics.median(d) / (statistics.median(r["submit_ms"]) / 1e3)
                print(f"  ratio (d)/(a) [{mode}]: {ratio:,.0f}x less time blocked")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
