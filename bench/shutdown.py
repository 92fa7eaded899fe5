"""Time from a stop signal to exit, per node, for each graph; and runner SIGTERM/SIGKILL -> all gone.

    .venv/bin/python bench/shutdown.py [--graphs policy_sim,collect,robot] [--repeats 3] [--signal SIGTERM]

For each graph: start it with :class:`~vla_rl_ros.graph.GraphRunner`, wait until it runs (an
episode under way; for ``robot`` a video file and an arm stand-in feed it and the logger is
recording), then send ``--signal`` to one node at a time and time its exit (the node's process
group, the logger's writer worker included, must be empty). Then, once each: start the graph
with ``python -m vla_rl_ros.cli run``, SIGTERM the runner (and, in a second start, SIGKILL it)
and time until no process it started is left. Prints one line per node and a table; the goal is
< 1 s per node and < 2 s for a whole graph.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.graph import GraphRunner, load_graph  # noqa: E402
from vla_rl_ros.lifetime import group_members, processes_of_runner  # noqa: E402
from vla_rl_ros.standin import ArmStandIn, StandInConfig, wait_until, write_video  # noqa: E402

UP_TIMEOUT_S = 240.0


_REPLAY_SOURCE: list[str] = []


def replay_source() -> str:
    """A one-episode dataset for the replay graph, recorded once per process (``collect --direct``,
    no ROS) in a temporary directory removed at exit."""
    if not _REPLAY_SOURCE:
        import atexit
        import shutil

        root = tempfile.mkdtemp(prefix="shutdown_replay_")
        atexit.register(shutil.rmtree, root, True)
        out = str(Path(root) / "replay_src")
        subprocess.run([sys.executable, "-m", "vla_rl_ros.cli", "collect", "--direct", "--episodes", "1",
                        "--workers", "1", "--out", out], check=True, stdout=subprocess.DEVNULL)
        _REPLAY_SOURCE.append(out)
    return _REPLAY_SOURCE[0]


def overrides(graph: str, tmp: Path, cfg: StandInConfig) -> dict:
    if graph == "explore":
        return {"out": str(tmp / "explore_ds"), "real_time_factor": 2.0}
    if graph == "replay":  # loops over its episode, so it is always mid-episode when stopped
        return {"data": replay_source(), "loop": True}
    if graph == "robot":
        return {"camera_source": write_video(tmp / "camera.avi", cfg), "out": str(tmp / "robot_ds"),
                "image_width": cfg.image_size, "image_height": cfg.image_size}
    if graph == "collect":
        return {"out": str(tmp / "collect_ds"), "real_time_factor": 2.0}
    if graph in ("sim", "policy_sim"):
        return {"real_time_factor": 2.0}
    raise SystemExit(f"no bench set-up for graph {graph!r}")


def wait_running(graph: str, bg, cfg: StandInConfig):
    """Block until the graph does real work; returns an arm stand-in to close (robot) or None."""
    from std_msgs.msg import String

    from vla_rl_ros.nodes.common import EPISODE_TOPIC, LATCHED_QOS, LOGGER_STATUS_TOPIC

    if graph == "robot":
        bg.collect(String, LOGGER_STATUS_TOPIC, LATCHED_QOS)
        if not bg.wait_for(lambda: bool(bg.latest_json(LOGGER_STATUS_TOPIC)), UP_TIMEOUT_S):
            raise RuntimeError("the robot graph's logger did not come up")
        arm = ArmStandIn(bg, cfg)
        if not bg.wait_for(lambda: bg.latest_json(LOGGER_STATUS_TOPIC).get("recording"), 60):
            raise RuntimeError("the logger did not start recording")
        return arm
    bg.collect(String, EPISODE_TOPIC, LATCHED_QOS)
    if not bg.wait_for(lambda: any(e.get("event") == "start" for e in bg.json_msgs(EPISODE_TOPIC)), UP_TIMEOUT_S):
        raise RuntimeError(f"graph {graph} did not start an episode")
    time.sleep(1.0)
    return None


def per_node(graph: str, sig: int, domain: int, tmp: Path, cfg: StandInConfig) -> dict[str, float]:
    from vla_rl_ros.nodes.background import BackgroundNode

    bg = BackgroundNode(f"bench_shutdown_{os.getpid()}", domain)
    runner = GraphRunner(load_graph(graph, overrides(graph, tmp, cfg)), log_dir=str(tmp / f"logs_{graph}"),
                         domain_id=domain).start()
    arm = None
    times = {}
    try:
        arm = wait_running(graph, bg, cfg)
        for name, p in runner.procs.items():
            t0 = time.monotonic()
            p.send_signal(sig)
            wait_until(lambda: p.poll() is not None and not group_members(p.pid), 30.0, poll=0.005)
            times[name] = time.monotonic() - t0 if p.poll() is not None else float("inf")
            print(f"  {graph:10s} {name:18s} {signal.Signals(sig).name} -> exit {times[name]:.3f} s (code {p.returncode})",
                  flush=True)
    finally:
        if arm is not None:
            arm.close()
        runner.stop(timeout=20)
        bg.close()
    return times


def whole_graph(graph: str, sig: int, domain: int, tmp: Path, cfg: StandInConfig) -> float:
    from vla_rl_ros.nodes.background import BackgroundNode

    bg = BackgroundNode(f"bench_shutdown_{os.getpid()}", domain)
    args = [f"{k}={v}" for k, v in overrides(graph, tmp, cfg).items()]
    r = subprocess.Popen([sys.executable, "-m", "vla_rl_ros.cli", "run", graph, *args, "--domain-id", str(domain),
                          "--log-dir", str(tmp / f"run_{graph}")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    arm = None
    try:
        arm = wait_running(graph, bg, cfg)
        t0 = time.monotonic()
        r.send_signal(sig)
        wait_until(lambda: not processes_of_runner(r.pid), 30.0, poll=0.005)
        dt = time.monotonic() - t0
        left = processes_of_runner(r.pid)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        r.wait(30)
        return dt if not left else float("inf")
    finally:
        if arm is not None:
            arm.close()
        if r.poll() is None:
            r.kill()
            r.wait()
        bg.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graphs", default="policy_sim,collect,robot")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--signal", default="SIGTERM", choices=["SIGTERM", "SIGINT"])
    ap.add_argument("--domain-id", type=int, default=150)
    args = ap.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    cfg = StandInConfig()
    sig = getattr(signal, args.signal)
    rows = {}
    whole = {}
    with tempfile.TemporaryDirectory(prefix="bench_shutdown_") as tmp:
        tmp = Path(tmp)
        for graph in args.graphs.split(","):
            for i in range(args.repeats):
                for n, t in per_node(graph, sig, args.domain_id, tmp / f"{graph}_{i}", cfg).items():
                    rows.setdefault((graph, n), []).append(t)
            for s in (signal.SIGTERM, signal.SIGKILL):
                t = whole_graph(graph, s, args.domain_id, tmp / f"{graph}_whole_{s}", cfg)
                whole[(graph, s.name)] = t
                print(f"  {graph:10s} runner {s.name} -> every process of the graph gone in {t:.3f} s", flush=True)
    print(f"\nper node, {args.signal} -> exit (node and its process group), {args.repeats} runs each:")
    print(f"{'graph':10s} {'node':18s} {'median s':>9s} {'max s':>7s}")
    for (g, n), ts in rows.items():
        ts = sorted(ts)
        print(f"{g:10s} {n:18s} {ts[len(ts) // 2]:9.3f} {ts[-1]:7.3f}")
    print("\nrunner signal -> no process of the graph left (python -m vla_rl_ros.cli run):")
    for (g, s), t in whole.items():
        print(f"{g:10s} {s:8s} {t:7.3f} s")
    worst = max([max(v) for v in rows.values()] + list(whole.values()))
    return 0 if worst < float("inf") else 1


if __name__ == "__main__":
    raise SystemExit(main())
