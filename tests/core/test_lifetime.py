"""Process lifetime (vla_rl_ros/lifetime.py) without ROS: parent-death signal, parent watch,
process-group reaping, stop signals; and the suite's own leftover-process check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import leftovers
from vla_rl_ros import lifetime
from vla_rl_ros.lifetime import StopConfig

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: /proc and PR_SET_PDEATHSIG")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _middle(child_code: str, tmp_path, preexec: bool) -> tuple[subprocess.Popen, int]:
    """A 'runner' process that starts one child (``child_code``) and prints the child's pid."""
    code = textwrap.dedent(f"""
        import os, subprocess, sys, time
        from vla_rl_ros.lifetime import node_preexec, PARENT_PID_ENV
        env = dict(os.environ, **{{PARENT_PID_ENV: str(os.getpid())}})
        pre = node_preexec(os.getpid()) if {preexec!r} else None
        p = subprocess.Popen([sys.executable, "-c", {child_code!r}], env=env, start_new_session=True,
                             preexec_fn=pre)
        print(p.pid, flush=True)
        time.sleep(600)
    """)
    mid = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return mid, int(mid.stdout.readline())


@linux
def test_a_child_dies_with_its_killed_parent(tmp_path):
    assert lifetime.has_parent_death_signal()
    mid, child = _middle("import time; time.sleep(600)", tmp_path, preexec=True)
    try:
        assert _alive(child)
        mid.kill()  # SIGKILL: the parent cannot clean up
        mid.wait()
        assert _wait_gone(child), "the child outlived its SIGKILLed parent"
    finally:
        for pid in (child,):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@linux
def test_without_the_kernel_signal_the_parent_watch_stops_the_child(tmp_path):
    # no preexec: only the child's own watch of $VLA_RL_ROS_PARENT_PID (the fallback of other platforms)
    flag = tmp_path / "stopped"
    child_code = textwrap.dedent(f"""
        import signal, threading, time
        from vla_rl_ros.lifetime import watch_parent, StopConfig
        done = threading.Event()
        def stop():
            open({str(flag)!r}, "w").write("graceful")
            done.set()
        watch_parent(stop, StopConfig(parent_poll_s=0.05, orphan_grace_s=30.0))
        done.wait(600)
    """)
    mid, child = _middle(child_code, tmp_path, preexec=False)
    try:
        time.sleep(0.5)
        assert _alive(child)
        mid.kill()
        mid.wait()
        assert _wait_gone(child), "the child outlived its parent"
        assert flag.read_text() == "graceful"  # the graceful stop ran, not only the hard exit
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


@linux
def test_reap_group_waits_for_stragglers_then_kills_them():
    # a group leader that leaves a grandchild behind in its group and exits
    code = "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); print(p.pid)"
    leader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    grand = int(leader.stdout.readline())
    leader.wait()
    assert _alive(grand)
    assert lifetime.group_members(leader.pid) == [grand]
    killed = lifetime.reap_group(leader.pid, timeout=0.3, poll=0.05)
    assert killed == [grand]
    assert _wait_gone(grand)
    assert lifetime.group_members(leader.pid) == []

    # one that finishes by itself within the grace period is not killed
    code = "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.5)']); print(p.pid)"
    leader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    grand = int(leader.stdout.readline())
    leader.wait()
    assert lifetime.reap_group(leader.pid, timeout=30.0, poll=0.05) == []
    assert not _alive(grand)


def test_stop_signals_raise_like_ctrl_c_and_are_restored():
    prev = signal.getsignal(signal.SIGTERM)
    assert lifetime.stop_signals_interrupt()
    try:
        with pytest.raises(KeyboardInterrupt) as ei:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)  # the handler runs between two bytecodes of this thread
        assert isinstance(ei.value, lifetime.StopRequested) and ei.value.signum == signal.SIGTERM
        # while a graph is stopping, a further signal only hurries the stop
        lifetime.STOP_SIGNALS.stopping += 1
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
        finally:
            lifetime.STOP_SIGNALS.stopping -= 1
        assert lifetime.STOP_SIGNALS.hurry()
    finally:
        lifetime.stop_signals_release()
    assert signal.getsignal(signal.SIGTERM) == prev


def test_stop_config_is_a_typed_dataclass():
    cfg = StopConfig(grace_s=1.0)
    assert cfg.grace_s == 1.0 and cfg.death_signal == signal.SIGTERM


@linux
def test_the_suite_finds_processes_a_test_leaves_behind():
    me = os.getpid()
    before = {int(n) for n in os.listdir("/proc") if n.isdigit()}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # leftover-child"])
    # an orphan: its parent exits at once, it is re-parented, only the session mark finds it
    r = subprocess.run([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
                        "'import time; time.sleep(600)  # leftover-orphan'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"],
                       capture_output=True, text=True, check=True)
    orphan = int(r.stdout)
    # someone else's process (no session mark, not our descendant) that runs vla_rl_ros: not ours
    foreign_env = {k: v for k, v in os.environ.items() if k != "VLA_RL_ROS_TEST_SESSION"}
    r = subprocess.run([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
                        "'import time; time.sleep(600)  # vla_rl_ros foreign'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"],
                       capture_output=True, text=True, check=True, env=foreign_env)
    foreign = int(r.stdout)
    try:
        left = leftovers(before, me)
        assert "leftover-child" in left.get(child.pid, "")
        assert "leftover-orphan" in left.get(orphan, "")
        assert foreign not in left, left
    finally:
        child.kill()
        child.wait()
        os.kill(orphan, signal.SIGKILL)
        os.kill(foreign, signal.SIGKILL)
    assert _wait_gone(orphan) and _wait_gone(foreign)
    assert leftovers(before, me) == {}
