"""Stopping a graph stops every node: the runner (``python -m vla_rl_ros.cli run``, a real
process) is sent SIGTERM or SIGKILL while its graph runs, and no process it started — nodes,
and the logger's writer worker — is alive 2 s later. The robot graph is checked with the logger
in the middle of an episode, which must be left out, never saved half-done (README)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from vla_rl_ros.graph import EXIT_CLEAN
from vla_rl_ros.lifetime import processes_of_runner
from vla_rl_ros.standin import ArmStandIn, StandInConfig, wait_until, write_video

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

GONE_S = 2.0  # the bound: no process of the graph alive this long after the signal
UP_TIMEOUT_S = 240.0  # a graph's start (imports, model load) on a loaded 2-core machine


def _cli(verb_args: list[str], domain_id: int, log: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vla_rl_ros.cli", *verb_args, "--domain-id", str(domain_id), "--log-dir", log],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _modules(procs: dict[int, str]) -> set[str]:
    out = set()
    for cmd in procs.values():
        parts = cmd.split()
        if "-m" in parts:
            out.add(parts[parts.index("-m") + 1].rsplit(".", 1)[-1])
    return out


def _logs(log_dir) -> str:
    """The tail of every node's log (what a node that did not stop in time was doing)."""
    from pathlib import Path

    out = []
    for f in sorted(Path(log_dir).glob("*.log")) if log_dir else []:
        out.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-1500:])
    return "\n".join(out)


def _signal_and_check(runner: subprocess.Popen, sig: int, expect: set[str], log_dir=None) -> tuple[int, str]:
    procs = processes_of_runner(runner.pid)
    assert expect <= _modules(procs), f"graph not fully up: {procs}"
    runner.send_signal(sig)
    gone = wait_until(lambda: not processes_of_runner(runner.pid), GONE_S, poll=0.02)
    left = processes_of_runner(runner.pid)
    try:
        out, _ = runner.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        runner.kill()
        out, _ = runner.communicate()
    for pid in left:  # do not leave them to the next test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert gone, (f"{len(left)} process(es) of the graph alive {GONE_S} s after {signal.Signals(sig).name}: {left}\n"
                  f"runner (exit {runner.returncode}):\n{out[-3000:]}\n{_logs(log_dir)}")
    return runner.returncode, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_policy_sim_stops_with_its_runner(sig, tmp_path, domain_id, probe):
    from std_msgs.msg import String

    from vla_rl_ros.nodes.common import EPISODE_TOPIC, LATCHED_QOS

    probe.collect(String, EPISODE_TOPIC, LATCHED_QOS)
    r = _cli(["run", "policy_sim", "real_time_factor=2.0"], domain_id, str(tmp_path / "logs"))
    try:
        # running for real: the policy loaded and the simulator has started an episode
        assert probe.wait_for(lambda: any(e.get("event") == "start" for e in probe.json_msgs(EPISODE_TOPIC)),
                              UP_TIMEOUT_S), (tmp_path / "logs" / "sim_node.log").read_text()[-2000:]
        code, out = _signal_and_check(r, sig, {"sim_node", "policy_node"}, tmp_path / "logs")
    finally:
        if r.poll() is None:
            r.kill()
            r.wait()
    if sig == signal.SIGTERM:
        assert code == EXIT_CLEAN, out  # every node exited cleanly on request
        assert "stopped by SIGTERM" in out, out
    else:
        assert code == -signal.SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_robot_graph_stops_with_its_runner_and_drops_the_episode_in_progress(sig, tmp_path, domain_id, probe):
    from std_msgs.msg import String

    from vla_rl_ros.nodes.common import LATCHED_QOS, LOGGER_STATUS_TOPIC

    cfg = StandInConfig()
    video = write_video(tmp_path / "camera.avi", cfg)
    out_ds = tmp_path / "robot_ds"
    probe.collect(String, LOGGER_STATUS_TOPIC, LATCHED_QOS)
    logs = tmp_path / "logs"
    r = _cli(["run", "robot", f"camera_source={video}", f"out={out_ds}", f"image_width={cfg.image_size}",
              f"image_height={cfg.image_size}"], domain_id, str(logs))
    arm = None
    try:
        assert probe.wait_for(lambda: bool(probe.latest_json(LOGGER_STATUS_TOPIC)), UP_TIMEOUT_S), \
            (logs / "trajectory_logger.log").read_text()[-2000:]
        arm = ArmStandIn(probe, cfg)  # joint states, instruction, an episode start: the logger records
        assert probe.wait_for(lambda: probe.latest_json(LOGGER_STATUS_TOPIC).get("recording"), 60), \
            (logs / "trajectory_logger.log").read_text()[-2000:]
        code, out = _signal_and_check(r, sig, {"camera_node", "policy_node", "trajectory_logger", "_worker"}, logs)
    finally:
        if arm is not None:
            arm.close()
        if r.poll() is None:
            r.kill()
            r.wait()
    if sig == signal.SIGTERM:
        assert code == EXIT_CLEAN, out
    else:
        assert code == -signal.SIGKILL
    # the logger stopped gracefully (SIGINT from the runner, or SIGTERM from the kernel when the
    # runner was killed) and left the unfinished episode out
    log = (logs / "trajectory_logger.log").read_text()
    assert "shutting down during episode 0: it is not saved" in log, log[-2000:]
    info = out_ds / "meta" / "info.json"
    if info.exists():
        assert json.loads(info.read_text()).get("total_episodes", 0) == 0
    assert not list(out_ds.glob("data/**/*.parquet")), "a half-done episode was written"


def test_evaluate_stops_its_graph_on_sigterm(tmp_path, domain_id, probe):
    """A verb that starts a graph (here evaluate) stops it on SIGTERM like on Ctrl-C."""
    from std_msgs.msg import String

    from vla_rl_ros.nodes.common import EPISODE_TOPIC, LATCHED_QOS

    probe.collect(String, EPISODE_TOPIC, LATCHED_QOS)
    r = _cli(["evaluate", "--episodes", "50", "--real-time-factor", "2"], domain_id, str(tmp_path / "logs"))
    try:
        assert probe.wait_for(lambda: any(e.get("event") == "start" for e in probe.json_msgs(EPISODE_TOPIC)),
                              UP_TIMEOUT_S)
        code, out = _signal_and_check(r, signal.SIGTERM, {"sim_node", "policy_node"})
    finally:
        if r.poll() is None:
            r.kill()
            r.wait()
    assert code == 1, out  # interrupted: the evaluation is incomplete, said so, no abort
    assert "ROS-graph evaluation" in out, out


def test_an_error_while_the_context_goes_down_is_a_stop_not_a_fault():
    # rclpy shuts its context down on a thread of its own after a stop signal, so a take can fail
    # just before rclpy.ok() turns False (1 robot-graph stop in 30 exited 1 from this)
    import threading
    import time

    import rclpy

    from vla_rl_ros.nodes.common import stopping_now

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=230)
    try:
        t0 = time.monotonic()
        assert not stopping_now(ctx, within=0.2)  # a live context: a real fault
        assert time.monotonic() - t0 >= 0.2
        threading.Timer(0.05, ctx.try_shutdown).start()
        assert stopping_now(ctx, within=5.0)  # goes down while we wait: the stop race
        assert time.monotonic() - t0 < 2.0
        assert stopping_now(ctx, within=0.0)
    finally:
        ctx.try_shutdown()


SWALLOWING_NODE = """
import os, signal, sys, time
from rclpy.node import Node
from vla_rl_ros.nodes.common import spin_node

try:  # a library that swallows the interrupt while the node process is still importing
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1.0)
except BaseException:
    pass

class Starting(Node):
    def __init__(self):
        super().__init__("starting_node")
        print("constructed", flush=True)

spin_node(Starting)
"""


def test_a_stop_swallowed_while_a_node_starts_still_stops_it(domain_id):
    # a policy node once kept running 60 s after the SIGINT it received while loading its policy
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "VLA_RL_ROS_PARENT_PID": str(os.getpid())}
    p = subprocess.Popen([sys.executable, "-c", SWALLOWING_NODE], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert "constructed" in out and p.returncode == 0, out


def test_a_node_obeys_the_runners_sigint_even_when_started_with_it_ignored():
    # a runner started under nohup or as a background job has SIGINT ignored; its nodes inherited
    # that, and a node that got the runner's SIGINT while still importing ran on until killed
    import signal as sig_mod

    from vla_rl_ros.lifetime import node_preexec

    pre = node_preexec(os.getpid())

    def ignored_then_node_preexec():
        sig_mod.signal(sig_mod.SIGINT, sig_mod.SIG_IGN)
        pre()

    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    out = subprocess.run([sys.executable, "-c", probe], preexec_fn=ignored_then_node_preexec,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == "False"
    env = {**os.environ, "VLA_RL_ROS_PARENT_PID": str(os.getpid())}
    probe_node = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); import importlib, sys; "
                  "import vla_rl_ros.lifetime as L; L.note_node_stop_signals(obey_ignored=True); "
                  "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)")
    out = subprocess.run([sys.executable, "-c", probe_node], env=env, capture_output=True, text=True,
                         timeout=60).stdout.strip()
    assert out == "False"
