"""Process lifetime: a graph's nodes never outlive the program that started them.

ROS-free (the runner, the command line and the nodes all use it).

* :func:`node_preexec` runs in each node process between ``fork`` and ``exec`` (the runner's
  ``preexec_fn``): on Linux it asks the kernel to send the node ``SIGTERM`` when its parent (the
  runner) dies, whatever killed it, ``SIGKILL`` included (``prctl(PR_SET_PDEATHSIG)``), and kills
  the node at once if the runner already died before that took effect.
* :func:`watch_parent` is the fallback every node also runs (and the only mechanism on macOS and
  other platforms without ``PR_SET_PDEATHSIG``): a thread that notices the runner is gone (the
  parent pid changes), stops the node gracefully, and ends the process if that does not finish
  within :attr:`StopConfig.orphan_grace_s`.
* :func:`group_members` / :func:`reap_group`: every node is the leader of its own process group;
  what it starts (the logger's writer worker) stays in that group, and the runner removes the
  whole group, grandchildren included.
* :func:`note_node_stop_signals` is installed first thing in every node process (before its
  imports, from ``vla_rl_ros/nodes/__init__.py``): SIGINT / SIGTERM set :data:`NODE_STOP` and
  raise ``KeyboardInterrupt`` once. rclpy's own handlers, installed later by ``rclpy.init``,
  call it after theirs, so the event records a stop that arrived at any point of the node's
  life: during its imports, its ``rclpy.init``, its constructor, or inside a library that
  swallowed the interrupt (a node once kept running 60 s after a SIGINT received while it was
  still loading its policy).
* :func:`stop_signals_interrupt` makes ``SIGTERM`` and ``SIGHUP`` behave like Ctrl-C in a
  program that starts graphs: they raise :class:`StopRequested`, a ``KeyboardInterrupt``, so
  the code that already stops the graph on Ctrl-C runs for them too.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

# the runner puts its pid here in each node's environment: the node watches that parent
PARENT_PID_ENV = "VLA_RL_ROS_PARENT_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class StopConfig:
    """How a graph stops. All times in seconds."""

    grace_s: float = 60.0  # a node that has not exited this long after SIGINT is killed (SIGKILL)
    group_grace_s: float = 30.0  # what a node left running in its group (a writer finishing a save) gets
    poll_s: float = 0.05  # how often the runner looks at processes while it waits
    parent_poll_s: float = 0.2  # how often a node checks that its runner is still alive
    orphan_grace_s: float = 30.0  # a node whose runner died ends itself this long after its graceful stop began
    death_signal: int = int(signal.SIGTERM)  # what the kernel sends a node when its runner dies (Linux)


STOP = StopConfig()

NODE_STOP = threading.Event()  # set once a node process received SIGINT or SIGTERM


def _node_stop_handler(signum, frame):
    if NODE_STOP.is_set():
        return  # a repeated signal does not interrupt the orderly stop already under way
    NODE_STOP.set()
    raise KeyboardInterrupt


def note_node_stop_signals(obey_ignored: bool = False) -> None:
    """In a node process: SIGINT and SIGTERM set :data:`NODE_STOP` and interrupt the main thread
    (once). A signal the process was told to ignore (``nohup``) stays ignored, unless
    ``obey_ignored`` (a node started by the runner, whose stop is a SIGINT). Only the main
    thread can set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        if obey_ignored or signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _node_stop_handler)


# ----------------------------------------------------------------------------- parent death
def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.prctl
        fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved here, not in the forked child (preexec_fn must do as little as possible)


def has_parent_death_signal() -> bool:
    return _PRCTL is not None


def node_preexec(parent_pid: int, death_signal: int = STOP.death_signal):
    """A ``preexec_fn``: the child gets ``death_signal`` when its parent dies (Linux).

    Called in the child after ``fork``: it only calls the pre-resolved ``prctl`` and
    ``getppid``/``kill`` (no imports, no locks), as ``preexec_fn`` in a threaded parent requires.
    """
    prctl = _PRCTL

    def _pre():
        # the runner stops its nodes with SIGINT: a node must not inherit an *ignored* SIGINT /
        # SIGTERM (a runner started under nohup or as a background job has them ignored, and a
        # node that got its stop while still importing then ran on until it was killed)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (ValueError, OSError):  # not the main thread: the node resets it at import
                pass
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os.kill(os.getpid(), signal.SIGKILL)

    return _pre


def set_parent_death_signal(death_signal: int = STOP.death_signal) -> bool:
    """The same for the calling process (a node started by something else than the runner)."""
    if _PRCTL is None:
        return False
    return _PRCTL(PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0) == 0


def watch_parent(on_orphan, cfg: StopConfig = STOP, parent_pid: int | None = None) -> threading.Thread | None:
    """Fallback to the kernel's parent-death signal: a daemon thread that calls ``on_orphan()``
    (a graceful stop) once the parent is gone, and ends the process with status 1 if it is
    still there ``cfg.orphan_grace_s`` later.

    The parent is ``parent_pid`` or the pid in ``$VLA_RL_ROS_PARENT_PID`` (set by the runner);
    without either nothing is watched (a node started by hand from a shell lives on its own).
    """
    if parent_pid is None:
        text = os.environ.get(PARENT_PID_ENV, "")
        if not text.isdigit():
            return None
        parent_pid = int(text)

    def _watch():
        while os.getppid() == parent_pid:
            time.sleep(cfg.parent_poll_s)
        print(f"[lifetime] parent process {parent_pid} is gone: stopping", file=sys.stderr, flush=True)
        try:
            on_orphan()
        finally:
            time.sleep(cfg.orphan_grace_s)
            print("[lifetime] graceful stop did not finish: exiting", file=sys.stderr, flush=True)
            os._exit(1)

    t = threading.Thread(target=_watch, name="parent-watch", daemon=True)
    t.start()
    return t


# ----------------------------------------------------------------------------- process groups
def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return raw[raw.rfind(")") + 2:].split()


def group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) processes of process group ``pgid``; None where /proc is not available."""
    if not os.path.isdir("/proc/self"):
        return None
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f and f[0] != "Z" and int(f[2]) == pgid:
            out.append(int(name))
    return out


def reap_group(pgid: int, timeout: float, poll: float = STOP.poll_s) -> list[int]:
    """Wait up to ``timeout`` for the processes left in group ``pgid`` (its leader has exited) to
    end by themselves, then SIGKILL the group. Returns the pids that had to be killed."""
    deadline = time.monotonic() + timeout
    members = group_members(pgid)
    if members is None:  # no /proc: nothing to wait for, just make sure the group is gone
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return []
    while members and time.monotonic() < deadline:
        time.sleep(poll)
        members = group_members(pgid)
    if members:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return members or []


# ----------------------------------------------------------------------------- stop signals
class StopRequested(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: raised in the main thread exactly like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopSignals:
    """Process-wide state of the stop signals (signals are process-wide as well)."""

    def __init__(self):
        self.received: list[int] = []
        self.users = 0
        self.stopping = 0  # > 0 while a graph is being stopped: signals then only hurry it
        self.hurried = False
        self.previous: dict[int, object] = {}
        self.lock = threading.Lock()

    def handler(self, signum, frame):
        self.received.append(signum)
        if self.stopping or len(self.received) > 1:
            self.hurried = True  # already stopping: stop waiting for graceful exits
            return
        raise StopRequested(signum)

    def hurry(self) -> bool:
        """A stop signal arrived while a graph was already stopping."""
        return self.hurried


STOP_SIGNALS = _StopSignals()
_HANDLED = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


def stop_signals_interrupt() -> bool:
    """From here on SIGTERM and SIGHUP raise :class:`StopRequested` (a KeyboardInterrupt) in the
    main thread. Only from the main thread, and only over the default handlers (an embedding
    program's own handlers are left alone). Pair with :func:`stop_signals_release`."""
    if threading.current_thread() is not threading.main_thread():
        return False
    with STOP_SIGNALS.lock:
        if STOP_SIGNALS.users == 0:
            STOP_SIGNALS.received.clear()
            STOP_SIGNALS.hurried = False
            STOP_SIGNALS.previous = {}
            for s in _HANDLED:
                if signal.getsignal(s) in (signal.SIG_DFL, None):
                    STOP_SIGNALS.previous[s] = signal.signal(s, STOP_SIGNALS.handler)
        STOP_SIGNALS.users += 1
    return True


def stop_signals_release() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    with STOP_SIGNALS.lock:
        if STOP_SIGNALS.users == 0:
            return
        STOP_SIGNALS.users -= 1
        if STOP_SIGNALS.users == 0:
            for s, prev in STOP_SIGNALS.previous.items():
                if signal.getsignal(s) == STOP_SIGNALS.handler:
                    signal.signal(s, prev)
            STOP_SIGNALS.previous = {}


# ----------------------------------------------------------------------------- ending a node
def exit_process(code: int) -> None:
    """End a node process that has shut down in order (its threads stopped, executor, node and
    context closed): run the ``atexit`` handlers, flush the output, and ``os._exit``.

    This skips only the interpreter's finalization, which takes ~1 s once torch is imported
    (policy node, logger) and can abort when a daemon thread is still inside native code
    ("terminate called without an active exception"); a node has nothing left for it to do.
    """
    import atexit
    import logging

    try:
        atexit._run_exitfuncs()
        logging.shutdown()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(int(code))


# ----------------------------------------------------------------------------- finding a graph's processes
def processes_of_runner(runner_pid: int) -> dict[int, str]:
    """Live processes started by the runner ``runner_pid`` (its nodes and what they started, which
    inherit ``$VLA_RL_ROS_PARENT_PID``), with their command lines. Linux (/proc); {} elsewhere."""
    if not os.path.isdir("/proc/self"):
        return {}
    key = f"{PARENT_PID_ENV}={runner_pid}".encode()
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if key not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        f = _stat_fields(pid)
        if f and f[0] != "Z":
            out[pid] = cmd
    return out
