"""kill -9 of the logger (and its background writer) mid-episode loses no completed episode."""

import json
import os
import signal
import subprocess
import sys

import pytest

from vla_rl_ros.graph import load_graph

COUNT = r"""
import json, sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
root = sys.argv[1]
ds = LeRobotDataset("local/vla_rl_ros", root=root)
n = ds.meta.total_episodes
assert len(ds) == ds.meta.total_frames
_ = ds[len(ds) - 1]  # the last frame decodes
print(json.dumps({"episodes": n, "frames": len(ds)}))
"""


@pytest.mark.timeout(1300)  # above the inner subprocess timeouts
@pytest.mark.parametrize("whole_group", [False, True], ids=["logger-only", "logger+writer"])
def test_kill_logger_mid_episode(tmp_path, domain_id, probe, whole_group):
    from std_msgs.msg import String

    from vla_rl_ros.graph import GraphRunner
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    out = tmp_path / "ds"
    probe.collect(String, "/vla/logger/status", LATCHED_QOS)
    probe.collect(String, "/vla/episode", RELIABLE_QOS)
    graph = load_graph("collect", {"out": str(out), "episodes": 0, "real_time_factor": 3.0,
                                   "image_width": 48, "image_height": 48, "family": "push"})
    runner = GraphRunner(graph, log_dir=str(tmp_path / "logs"), domain_id=domain_id).start()
    try:
        def saved():
            msgs = probe.msgs("/vla/logger/status")
            return json.loads(msgs[-1][1].data).get("saved", 0) if msgs else 0

        assert probe.wait_for(lambda: saved() >= 2, 240), runner.tail("trajectory_logger")
        n_saved = saved()
        # wait until the next episode is under way, then kill in the middle of it
        def started_after():
            evs = [json.loads(m.data) for _, m in probe.msgs("/vla/episode")]
            starts = [e["episode"] for e in evs if e["event"] == "start"]
            return starts and max(starts) >= n_saved
        assert probe.wait_for(started_after, 60)
        import time

        time.sleep(1.0)
        pid = runner.procs["trajectory_logger"].pid
        if whole_group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        runner.procs["trajectory_logger"].wait(timeout=10)
    finally:
        runner.stop(timeout=30)
    if not whole_group:  # an orphaned writer finishes what it was given, then exits
        time.sleep(3.0)
    r = subprocess.run([sys.executable, "-c", COUNT, str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["episodes"] >= n_saved  # every episode reported saved is there and loads

    # a new logger on the same folder recovers/continues and appends
    r2 = subprocess.run(
        [sys.executable, "-m", "vla_rl_ros.cli", "collect", "--episodes", "1", "--out", str(out), "--real-time-factor", "3",
         "--image-size", "48", "--family", "push", "--domain-id", str(domain_id), "--log-dir", str(tmp_path / "logs2")],
        capture_output=True, text=True, timeout=300,
    )
    assert r2.returncode == 0, r2.stdout[-2000:] + r2.stderr[-2000:]
    r3 = subprocess.run([sys.executable, "-c", COUNT, str(out)], capture_output=True, text=True, timeout=300)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert json.loads(r3.stdout.strip().splitlines()[-1])["episodes"] >= d["episodes"] + 1
