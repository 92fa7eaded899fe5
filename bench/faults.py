"""kill -9 of each node of the recording graph in turn: what the others do, whether the arm holds,
what the dataset keeps. One row of the README's fault table per node.

    .venv/bin/python bench/faults.py [--nodes sim_node policy_node exploration_node trajectory_logger]
        [--after 6] [--json out/faults.json]

For each node a fresh ``explore`` graph (sim_node + policy_node + exploration_node +
trajectory_logger -> LeRobot dataset; the shipped policy, push scenes, x3 real time) runs until the
logger has saved 2 episodes and the next one is under way; then the node is killed with SIGKILL
(its whole process group: the logger's background writer too). For ``--after`` seconds the
script records which nodes are still alive, whether joint states still arrive and how far the arm
moves (max |Δq| over the arm joints: a held arm moves ~0), and how many episodes the logger still
reports saved. The graph is then stopped as a user would (the runner's SIGTERM) and the dataset
is opened by ``LeRobotDataset`` in a fresh process: every episode reported saved before the kill
must load. Then the root is recovered as a restarted logger does first (``core/data/store.recover``:
an interrupted commit rolled forward, episodes spooled but not yet saved replayed) and counted
again: "lost after restart". Nothing restarts a killed node (the runner has no respawn). Under ``vla-rl-ros run`` a
*required* node's exit makes the runner stop the whole graph in order (the ``required`` column);
here the runner is left alone for ``--after`` seconds so the other nodes' own reaction shows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COUNT = r"""
import json, sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/vla_rl_ros", root=sys.argv[1])
assert len(ds) == ds.meta.total_frames
_ = ds[len(ds) - 1]
print(json.dumps({"episodes": ds.meta.total_episodes, "frames": len(ds)}))
"""
RECOVER = r"""
import json, sys
from vla_rl_ros.core.data.store import recover
rep = recover(sys.argv[1])
print(json.dumps({"replayed": len(rep.get("replayed") or [])}))
"""
NODES = ("sim_node", "policy_node", "exploration_node", "trajectory_logger")


def one(node: str, after: float, domain: int, work: Path) -> dict:
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from vla_rl_ros.core.policy.checkpoint import read_config
    from vla_rl_ros.core.paths import DEFAULT_CHECKPOINT
    from vla_rl_ros.graph import GraphRunner, load_graph
    from vla_rl_ros.nodes.background import BackgroundNode
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, joint_state_to_array

    out = work / f"ds_{node}"
    size = int(read_config(str(DEFAULT_CHECKPOINT))["policy"]["image_size"])
    g = load_graph("explore", {"out": str(out), "episodes": 0, "real_time_factor": 3.0, "family": "push",
                               "image_width": size, "image_height": size, "max_steps": 120,
                               "backend": "onnxruntime"})
    bg = BackgroundNode(f"faults_{node}", domain)
    bg.collect(String, "/vla/logger/status", LATCHED_QOS)
    bg.collect(String, "/vla/episode", RELIABLE_QOS)
    bg.collect(JointState, "/joint_states", RELIABLE_QOS)
    runner = GraphRunner(g, log_dir=str(work / f"logs_{node}"), domain_id=domain).start()

    def saved() -> int:
        msgs = bg.msgs("/vla/logger/status")
        return json.loads(msgs[-1][1].data).get("saved", 0) if msgs else 0

    row = {"node": node, "required": node in {s.name for s in g.nodes if s.required}}
    try:
        if not bg.wait_for(lambda: saved() >= 2, 300):
            raise SystemExit(f"{node}: the graph never saved 2 episodes; logs in {work / f'logs_{node}'}")
        n_saved = saved()
        starts = lambda: [json.loads(m.data)["episode"] for _, m in bg.msgs("/vla/episode")  # noqa: E731
                          if json.loads(m.data)["event"] == "start"]
        bg.wait_for(lambda: starts() and max(starts()) >= n_saved, 60)
        time.sleep(1.0)  # mid-episode
        n_saved = saved()
        js_before = len(bg.msgs("/joint_states"))
        t_kill = time.monotonic()
        ended_before = sum(json.loads(m.data)["event"] == "end" for _, m in bg.msgs("/vla/episode"))
        os.killpg(runner.procs[node].pid, signal.SIGKILL)
        runner.procs[node].wait(timeout=10)
        time.sleep(after)
        js = [(t, joint_state_to_array(m)) for t, m in bg.msgs("/joint_states")[js_before:]]
        # the arm within the episode that was running: from 0.5 s after the kill (messages in
        # flight and the chunk's remaining points, 8 ticks = 0.27 s at x3) to the next episode's
        # start (the simulator resets the arm to home then)
        events = [(t, json.loads(m.data)) for t, m in bg.msgs("/vla/episode") if t > t_kill]
        starts_after = [t for t, e in events if e["event"] == "start"]
        t_end = starts_after[0] if starts_after else float("inf")
        held = [q for t, q in js if t_kill + 0.5 < t < t_end]
        dq = float(np.abs(np.array(held)[:, :7] - held[0][:7]).max()) if len(held) > 1 else float("nan")
        row.update(saved_before_kill=n_saved, ended_before_kill=ended_before, saved_after=saved(), joint_states_in_episode=len(held),
                   episodes_ended_after_kill=sum(e["event"] == "end" for _, e in events),
                   alive=sorted(n for n in runner.procs if n not in runner.dead()),
                   dead=sorted(runner.dead()),
                   joint_states_after=sum(t > t_kill + 0.5 for t, _ in js), arm_motion_rad=dq)
    finally:
        t0 = time.monotonic()
        runner.stop(timeout=30)
        row["stop_s"] = round(time.monotonic() - t0, 2)
        bg.close()
    time.sleep(3.0)  # an orphaned writer finishes what it was given
    r = subprocess.run([sys.executable, "-c", COUNT, str(out)], capture_output=True, text=True, timeout=300)
    if r.returncode == 0:
        got = json.loads(r.stdout.strip().splitlines()[-1])
        row.update(loaded_episodes=got["episodes"], loaded_frames=got["frames"])
    else:
        row.update(loaded_episodes=None, load_error=r.stderr.strip().splitlines()[-1][:200])
    # what a restarted logger does first: recover the root (roll an interrupted commit forward,
    # replay episodes that were spooled — durable — but not yet saved), then count again
    r = subprocess.run([sys.executable, "-c", RECOVER, str(out)], capture_output=True, text=True, timeout=600)
    row["replayed_on_restart"] = (json.loads(r.stdout.strip().splitlines()[-1])["replayed"] if r.returncode == 0
                                  else f"recover failed: {r.stderr.strip().splitlines()[-1][:200]}")
    r = subprocess.run([sys.executable, "-c", COUNT, str(out)], capture_output=True, text=True, timeout=300)
    row["loaded_after_restart"] = json.loads(r.stdout.strip().splitlines()[-1])["episodes"] if r.returncode == 0 else None
    # lost: episodes the simulator had ended before the kill that the dataset does not hold, before
    # and after the restart's recovery (the logger's status lags its background writer, so "saved"
    # undercounts)
    row["lost_completed"] = (None if row.get("loaded_episodes") is None
                             else max(0, row["ended_before_kill"] - row["loaded_episodes"]))
    row["lost_after_restart"] = (None if row["loaded_after_restart"] is None
                                 else max(0, row["ended_before_kill"] - row["loaded_after_restart"]))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", nargs="+", default=list(NODES), choices=NODES)
    ap.add_argument("--after", type=float, default=6.0, help="seconds observed after the kill")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_faults_"))
    domain = 150 + os.getpid() % 50
    rows = []
    for n in args.nodes:
        print(f"kill -9 {n} ...", flush=True)
        rows.append(one(n, args.after, domain, work))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| killed (required?) | still running | joint states in the next {args.after:.0f} s | arm motion in the "
          "episode after the kill (max |Δq|, rad) | episodes ended after the kill | ended before the kill (reported "
          "saved) → loadable after | lost | replayed by a restarted logger → lost after restart | stop |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['node']} ({'yes' if r['required'] else 'no'}) | {', '.join(r['alive']) or '-'} | "
              f"{r['joint_states_after']} | {r['arm_motion_rad']:.4f} ({r['joint_states_in_episode']} states) | "
              f"{r['episodes_ended_after_kill']} | {r['ended_before_kill']} ({r['saved_before_kill']}) → "
              f"{r.get('loaded_episodes')} | "
              f"{r['lost_completed']} | {r['replayed_on_restart']} → {r['lost_after_restart']} | {r['stop_s']} s |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
