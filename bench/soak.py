"""A soak of the recording graph: hours of the loop compressed into ``--minutes`` of wall time.

    .venv/bin/python bench/soak.py [--minutes 30] [--swap-every 120] [--sample-every 10] [--out out/soak]

The ``explore`` graph (sim_node + policy_node + exploration_node + trajectory_logger -> LeRobot
dataset; the shipped policy, all three task families, real time) runs for ``--minutes``; every
``--swap-every`` seconds a new version of the policy is announced on ``/vla/policy/weights`` (two
re-versioned copies of the shipped checkpoint in turn, written under ``./runs``: the policy node's
default allowed directory). Every ``--sample-every`` seconds the script records each node's
resident memory (RSS summed over its process group: the logger's background writer included),
the policy's stamp → chunk latency p50/p99 (its status: the last 2,000 chunks), the simulator's
late control ticks, and the logger's saved / failed / dropped counts.

At the end the graph is stopped as a user would (SIGTERM to the runner) and the dataset is read
back by ``LeRobotDataset`` in a fresh process. Printed: the RSS slope per node (MB per hour, a
least-squares line over the run after the first 2 minutes), late ticks, swaps (swapped / refused),
latency p50/p99 over the first and the last 5 minutes, episodes saved and read back. Written:
``soak.json`` (every sample) and ``soak.png`` (RSS, latency and late ticks over time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faults import COUNT  # noqa: E402  (the same read-back as the fault bench)

#: samples before this many seconds are left out of the RSS slope (imports, first allocations)
WARMUP_S = 120.0
#: window (s) of the "first" and "last" latency figures
WINDOW_S = 300.0


def group_rss_mb(pgid: int) -> float:
    """Resident memory (MB) of every process in process group ``pgid``."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024.0


def versions(ckpt: str, work: Path) -> list[str]:
    """Two re-versioned copies of ``ckpt`` (the same weights, new version numbers)."""
    from vla_rl_ros.core.policy.checkpoint import read_config
    from vla_rl_ros.core.policy.grounding import save_as_version

    v = int(read_config(ckpt).get("version", 0))
    return [str(save_as_version(ckpt, work / f"v{v + 1 + i}", v + 1 + i)) for i in range(2)]


def slope_mb_per_hour(t: np.ndarray, y: np.ndarray) -> float:
    m = t >= WARMUP_S
    if m.sum() < 3:
        return float("nan")
    return float(np.polyfit(t[m] / 3600.0, y[m], 1)[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--swap-every", type=float, default=120.0)
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--out", default="out/soak")
    ap.add_argument("--real-time-factor", type=float, default=1.0)
    args = ap.parse_args()

    from std_msgs.msg import String

    from vla_rl_ros.core.paths import DEFAULT_CHECKPOINT
    from vla_rl_ros.core.policy.checkpoint import read_config
    from vla_rl_ros.graph import GraphRunner, load_graph
    from vla_rl_ros.nodes.background import BackgroundNode
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, SIM_STATUS_TOPIC

    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    Path("runs").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soak_versions_", dir="runs")).resolve()
    ckpt = str(Path(DEFAULT_CHECKPOINT).resolve())
    targets = versions(ckpt, work)
    size = int(read_config(ckpt)["policy"]["image_size"])
    domain = 150 + os.getpid() % 40
    g = load_graph("explore", {"out": str(out / "ds"), "episodes": 0, "real_time_factor": args.real_time_factor,
                               "image_width": size, "image_height": size, "max_steps": 120,
                               "backend": "onnxruntime", "sigma": [0.01]})
    bg = BackgroundNode("soak", domain)
    for topic in ("/vla/policy/status", "/vla/logger/status", SIM_STATUS_TOPIC, "/vla/policy/swap"):
        bg.collect(String, topic, LATCHED_QOS)
    pub = bg.node.create_publisher(String, "/vla/policy/weights", RELIABLE_QOS)
    runner = GraphRunner(g, log_dir=str(out / "logs"), domain_id=domain).start()
    samples, swaps = [], 0
    latest = lambda topic: bg.latest_json(topic) or {}  # noqa: E731
    try:
        if not bg.wait_for(lambda: latest("/vla/policy/status").get("chunks", 0) > 20, 300):
            raise SystemExit(f"the policy never commanded; logs in {out / 'logs'}")
        t0 = time.monotonic()
        next_swap, next_sample = args.swap_every, 0.0
        print(f"soak: {args.minutes:.0f} min, a new version every {args.swap_every:.0f} s; nodes {sorted(runner.procs)}",
              flush=True)
        while (now := time.monotonic() - t0) < 60.0 * args.minutes:
            if runner.dead():
                raise SystemExit(f"nodes died: {runner.dead()}; logs in {out / 'logs'}")
            if now >= next_swap:
                pub.publish(String(data=json.dumps({"path": targets[swaps % 2]})))
                swaps += 1
                next_swap += args.swap_every
            if now >= next_sample:
                pol, log, sim = latest("/vla/policy/status"), latest("/vla/logger/status"), latest(SIM_STATUS_TOPIC)
                samples.append({
                    "t": now, "rss_mb": {n: group_rss_mb(p.pid) for n, p in runner.procs.items()},
                    "latency_p50_ms": pol.get("latency_p50_ms"), "latency_p99_ms": pol.get("latency_p99_ms"),
                    "chunks": pol.get("chunks"), "version": pol.get("version"),
                    "late_ticks": sim.get("late"), "ticks": sim.get("ticks"),
                    "saved": log.get("saved"), "failed": log.get("failed"), "dropped_frames": log.get("dropped_frames"),
                })
                s = samples[-1]
                print(f"  {now / 60:5.1f} min  RSS " + " ".join(f"{n[:8]} {v:.0f}" for n, v in s["rss_mb"].items())
                      + f"  MB; latency p50 {s['latency_p50_ms']} ms; saved {s['saved']}; v{s['version']}", flush=True)
                next_sample += args.sample_every
            time.sleep(0.2)
    finally:
        runner.stop(timeout=60)
        bg.close()
        shutil.rmtree(work, ignore_errors=True)
    time.sleep(2.0)
    r = subprocess.run([sys.executable, "-c", COUNT, str(out / "ds")], capture_output=True, text=True, timeout=600)
    loaded = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-500:]}
    events = bg.json_msgs("/vla/policy/swap")
    t = np.array([s["t"] for s in samples])
    nodes = sorted(samples[0]["rss_mb"]) if samples else []
    slopes = {n: slope_mb_per_hour(t, np.array([s["rss_mb"][n] for s in samples])) for n in nodes}

    def window(key, first):
        m = (t <= WINDOW_S) if first else (t >= t[-1] - WINDOW_S)
        v = [samples[i][key] for i in np.flatnonzero(m) if samples[i][key] is not None]
        return float(np.median(v)) if v else float("nan")

    res = {"minutes": args.minutes, "announced": swaps, "swapped": sum(e.get("event") == "swapped" for e in events),
           "refused": sum(e.get("event") == "refused" for e in events), "rss_slope_mb_per_hour": slopes,
           "rss_first_mb": samples[0]["rss_mb"] if samples else {}, "rss_last_mb": samples[-1]["rss_mb"] if samples else {},
           "late_ticks": samples[-1]["late_ticks"] if samples else None, "ticks": samples[-1]["ticks"] if samples else None,
           "latency_p50_first_ms": window("latency_p50_ms", True), "latency_p50_last_ms": window("latency_p50_ms", False),
           "latency_p99_first_ms": window("latency_p99_ms", True), "latency_p99_last_ms": window("latency_p99_ms", False),
           "saved": samples[-1]["saved"] if samples else None, "failed": samples[-1]["failed"] if samples else None,
           "dropped_frames": samples[-1]["dropped_frames"] if samples else None, "read_back": loaded}
    (out / "soak.json").write_text(json.dumps({"summary": res, "samples": samples}, indent=1))
    print(json.dumps(res, indent=1))
    plot(samples, nodes, out / "soak.png")
    return 0


def plot(samples, nodes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        return
    t = np.array([s["t"] for s in samples]) / 60.0
    fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
    for n in nodes:
        ax[0].plot(t, [s["rss_mb"][n] for s in samples], label=n)
    ax[0].set_ylabel("RSS (MB, process group)")
    ax[0].legend(fontsize=7)
    for key in ("latency_p50_ms", "latency_p99_ms"):
        ax[1].plot(t, [np.nan if s[key] is None else s[key] for s in samples], label=key[8:11])
    ax[1].set_ylabel("stamp → chunk latency (ms)")
    ax[1].legend(fontsize=8)
    ax[2].plot(t, [np.nan if s["late_ticks"] is None else s["late_ticks"] for s in samples], label="late ticks")
    ax[2].plot(t, [np.nan if s["saved"] is None else s["saved"] for s in samples], label="episodes saved")
    ax[2].legend(fontsize=8)
    for a in ax:
        a.set_xlabel("minutes")
        a.grid(alpha=0.3)
    fig.suptitle("soak: explore graph, hot swap every 2 min", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
