"""Suite-wide: no test leaves a process running.

At the start of the session every process that exists is recorded, and this session's pytest pid
is put into the environment (``VLA_RL_ROS_TEST_SESSION``), which everything the tests start
inherits: nodes, the CLI, the logger's writer worker. After each test, a process that did not
exist when the test started and still runs is a leftover when it

* descends from this pytest process, or
* carries this session's mark in its environment (an orphan re-parented to init).

Nothing else is looked at: a ``vla_rl_ros`` process someone started outside this pytest session
(another terminal, another suite) is neither reported nor killed. Everything the tests start
passes ``os.environ`` on (graph runner, writer worker, CLI subprocesses), so the mark reaches it.

Leftovers get a short grace period to exit (a graph that was just stopped), then they are
killed and the test fails with their command lines. Linux (``/proc``) only; elsewhere the check
is skipped.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

SESSION_ENV = "VLA_RL_ROS_TEST_SESSION"
LEFTOVER_GRACE_S = 5.0  # how long processes of a finished test get to exit
POLL_S = 0.1

_HAVE_PROC = os.path.isdir("/proc/self")
# helpers the pytest process keeps for its own lifetime (started by the first test that uses
# multiprocessing, reused by the next ones): not a leftover of that test
INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[1])


def _pids() -> set[int]:
    return {int(n) for n in os.listdir("/proc") if n.isdigit()}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _session_mark(pid: int) -> str | None:
    """This process's VLA_RL_ROS_TEST_SESSION ('' when unset), None when unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    key = SESSION_ENV.encode() + b"="
    for item in env:
        if item.startswith(key):
            return item[len(key):].decode(errors="replace")
    return ""


def leftovers(before: set[int], me: int) -> dict[int, str]:
    """Processes started since ``before`` that belong to this test session and still run."""
    procs = {}
    for pid in _pids() - before - {me}:
        st = _stat(pid)
        if st is not None and st[0] != "Z":
            procs[pid] = st[1]

    def descends(pid: int) -> bool:
        seen = set()
        while pid > 1 and pid not in seen:
            seen.add(pid)
            if pid == me:
                return True
            st = procs.get(pid)
            if st is None:
                s = _stat(pid)
                if s is None:
                    return False
                pid = s[1]
            else:
                pid = st
        return False

    out = {}
    for pid in procs:
        mark = _session_mark(pid)
        cmd = _cmdline(pid)
        if procs[pid] == me and any(h in cmd for h in INTERPRETER_HELPERS):
            continue
        if descends(pid) or mark == str(me):
            out[pid] = cmd or "?"
    return out


@pytest.fixture(scope="session", autouse=True)
def _process_baseline():
    if not _HAVE_PROC:
        yield None
        return
    os.environ[SESSION_ENV] = str(os.getpid())
    yield _pids()


@pytest.fixture(autouse=True)
def _no_process_left_behind(_process_baseline):
    if _process_baseline is None:
        yield
        return
    me = os.getpid()
    before = _pids() | _process_baseline
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    left = leftovers(before, me)
    while left and time.monotonic() < deadline:
        time.sleep(POLL_S)
        left = leftovers(before, me)
    if not left:
        return
    for pid in left:  # do not let them disturb the tests that follow
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    lines = "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in sorted(left.items()))
    pytest.fail(f"the test left {len(left)} process(es) running {LEFTOVER_GRACE_S:.0f} s after it ended "
                f"(now killed):\n{lines}", pytrace=False)


@pytest.fixture(scope="module")
def private_hf_cache(tmp_path_factory):
    """Keep HF datasets' Arrow cache (one entry per dataset loaded) out of ~/.cache, per test
    module (``pytestmark = pytest.mark.usefixtures("private_hf_cache")``)."""
    import datasets.config as dcfg

    d = tmp_path_factory.mktemp("hf_cache")
    old, old_env = dcfg.HF_DATASETS_CACHE, os.environ.get("HF_DATASETS_CACHE")
    dcfg.HF_DATASETS_CACHE = d
    os.environ["HF_DATASETS_CACHE"] = str(d)  # subprocesses
    yield d
    dcfg.HF_DATASETS_CACHE = old
    if old_env is None:
        os.environ.pop("HF_DATASETS_CACHE", None)
    else:
        os.environ["HF_DATASETS_CACHE"] = old_env
