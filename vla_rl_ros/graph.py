"""The node graph, described once in ``config/graphs/<name>.yaml`` and started two ways.

``ros2 launch vla_rl_ros <name>.launch.py`` reads these files on a machine with ROS 2 installed;
``vla-rl-ros run <name>`` (this module's :class:`GraphRunner`) starts the same nodes as separate
real rclpy processes where ``ros2 launch`` is absent. No rclpy import here.

A graph file has ``args`` (defaults, overridable as ``key=value``), ``nodes`` (``name``,
``executable`` = a module in ``vla_rl_ros.nodes``, ``parameters``, optional ``required``) and
optionally ``include: <other graph>`` whose args and nodes come first. ``${arg}`` in a parameter
is replaced by the argument's value (keeping its type when the whole value is one reference).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vla_rl_ros.lifetime import (
    PARENT_PID_ENV,
    STOP,
    STOP_SIGNALS,
    StopConfig,
    node_preexec,
    reap_group,
    stop_signals_interrupt,
    stop_signals_release,
)

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class GraphError(ValueError):
    pass


def graph_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("VLA_RL_ROS_GRAPHS"):
        dirs.append(Path(os.environ["VLA_RL_ROS_GRAPHS"]))
    dirs.append(Path(__file__).resolve().parents[1] / "config" / "graphs")
    try:  # an installed ROS 2 package keeps them in share/
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("vla_rl_ros")) / "config" / "graphs")
    except Exception:
        pass
    return dirs


def available_graphs() -> list[str]:
    names = set()
    for d in graph_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def _find(name: str) -> Path:
    for d in graph_dirs():
        p = d / f"{name}.yaml"
        if p.is_file():
            return p
    known = available_graphs()
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise GraphError(f"unknown graph {name!r}; available: {', '.join(known)}.{hint}")


@dataclass
class NodeSpec:
    name: str
    executable: str
    parameters: dict = field(default_factory=dict)
    required: bool = False
    namespace: str = ""  # e.g. /left: the node's relative topic names resolve inside it


@dataclass
class Graph:
    name: str
    description: str
    args: dict
    nodes: list


def _parse_value(text: str):
    """CLI ``key=value`` strings -> YAML scalars (ints, floats, bools, lists)."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _substitute(value, args: dict):
    if isinstance(value, str):
        m = _REF.fullmatch(value.strip())
        if m:
            if m.group(1) not in args:
                raise GraphError(f"parameter refers to unknown argument ${{{m.group(1)}}}")
            return args[m.group(1)]

        def rep(mm):
            if mm.group(1) not in args:
                raise GraphError(f"parameter refers to unknown argument ${{{mm.group(1)}}}")
            return str(args[mm.group(1)])

        return _REF.sub(rep, value)
    if isinstance(value, list):
        return [_substitute(v, args) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, args) for k, v in value.items()}
    return value


def _raw(name: str, seen: tuple = ()) -> tuple[dict, list, str]:
    if name in seen:
        raise GraphError(f"graph include cycle: {' -> '.join(seen + (name,))}")
    data = yaml.safe_load(_find(name).read_text()) or {}
    args, nodes = {}, []
    if data.get("include"):
        args, nodes, _ = _raw(str(data["include"]), seen + (name,))
    args.update(data.get("args") or {})
    nodes = nodes + list(data.get("nodes") or [])
    return args, nodes, str(data.get("description", ""))


def load_graph(name: str, overrides: dict | None = None) -> Graph:
    args, raw_nodes, description = _raw(name)
    for k, v in (overrides or {}).items():
        if k not in args:
            raise GraphError(f"graph {name!r} has no argument {k!r}; arguments: {', '.join(sorted(args))}")
        args[k] = _parse_value(v) if isinstance(v, str) and not isinstance(args[k], str) else v
    ns = str(args.get("namespace") or "").strip().strip("/")
    if ns and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*", ns):
        raise GraphError(f"graph {name!r}: namespace {ns!r} is not a ROS name (letters, digits, _ and /)")
    nodes = []
    for n in raw_nodes:
        if "executable" not in n:
            raise GraphError(f"graph {name!r}: node without 'executable': {n}")
        params = _substitute(dict(n.get("parameters") or {}), args)
        if "use_sim_time" in args:  # rclpy's own parameter: every node takes its clock from /clock
            params["use_sim_time"] = bool(args["use_sim_time"])
        nodes.append(
            NodeSpec(
                name=str(n.get("name", n["executable"])),
                executable=str(n["executable"]),
                parameters=params,
                required=bool(n.get("required", False)),
                namespace=f"/{ns}" if ns else "",
            )
        )
    return Graph(name, description, args, nodes)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise GraphError(f"expected key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v
    return out


# ---------------------------------------------------------------------------- runner
def ros_env(domain_id: int | None = None, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


def node_command(spec: NodeSpec, params_file: str) -> list[str]:
    return [
        sys.executable, "-m", f"vla_rl_ros.nodes.{spec.executable}",
        "--ros-args", "-r", f"__node:={spec.name}", "--params-file", params_file,
    ] + (["-r", f"__ns:={spec.namespace}"] if spec.namespace else [])


def _ros_param(v):
    """ROS parameters cannot be empty lists or None; keep everything else as is."""
    if v is None:
        return ""
    return v


# exit codes of a graph run (``vla-rl-ros run``, :meth:`GraphRunner.run`)
EXIT_CLEAN = 0  # stopped on request (Ctrl-C, SIGTERM, SIGHUP) or ended by itself; every node exited cleanly
EXIT_NODE_FAILED = 1  # a node exited with an error while the graph was running
EXIT_UNCLEAN_STOP = 3  # on stop, a node had to be killed (no exit within the grace period) or exited with an error
# how a node may end when it is asked to stop: its own clean exit, or the stop signal itself
# (a node still importing its modules when the stop came has no handler yet)
_CLEAN_AT_STOP = (0, -int(signal.SIGINT), -int(signal.SIGTERM))


class GraphRunner:
    """Starts every node of a graph as its own process; stops them all (SIGINT, then SIGKILL).

    Each node leads its own process group (what it starts, e.g. the logger's writer worker, stays
    in it) and, on Linux, gets SIGTERM from the kernel if this process dies, even by SIGKILL
    (``PR_SET_PDEATHSIG``); every node also watches this process and stops when it is gone
    (:mod:`vla_rl_ros.lifetime`). While a runner is started, SIGTERM and SIGHUP raise
    :class:`~vla_rl_ros.lifetime.StopRequested` (a ``KeyboardInterrupt``) in the main thread,
    so a program's Ctrl-C handling stops the graph on them as well.

    Start it from the thread that keeps running while the graph runs (the main thread): the
    kernel's parent-death signal fires when the *thread* that started a node ends.
    """

    def __init__(self, graph: Graph, log_dir: str | None = None, domain_id: int | None = None,
                 stop_cfg: StopConfig = STOP):
        self.graph = graph
        self.log_dir = Path(log_dir) if log_dir else None
        self.env = ros_env(domain_id)
        self.stop_cfg = stop_cfg
        self.procs: dict[str, subprocess.Popen] = {}
        self.killed: dict[str, list[int]] = {}  # node -> pids SIGKILLed at stop (the node and/or its group)
        self._tmp = tempfile.TemporaryDirectory(prefix="vla_rl_ros_graph_")
        self._logs = {}
        self._signals = False
        self._codes: dict[str, int] | None = None

    def log_path(self, name: str) -> Path | None:
        return self.log_dir / f"{name}.log" if self.log_dir else None

    def start(self) -> "GraphRunner":
        self._signals = stop_signals_interrupt()
        try:
            if self.log_dir:
                self.log_dir.mkdir(parents=True, exist_ok=True)
            env = dict(self.env)
            env[PARENT_PID_ENV] = str(os.getpid())
            for spec in self.graph.nodes:
                pfile = Path(self._tmp.name) / f"{spec.name}.yaml"
                params = {k: _ros_param(v) for k, v in spec.parameters.items()}
                pfile.write_text(yaml.safe_dump({f"{spec.namespace}/{spec.name}" if spec.namespace else spec.name:
                                                  {"ros__parameters": params}}))
                out = None
                if self.log_dir:
                    out = open(self.log_path(spec.name), "w")
                    self._logs[spec.name] = out
                self.procs[spec.name] = subprocess.Popen(
                    node_command(spec, str(pfile)), env=env, stdout=out,
                    stderr=subprocess.STDOUT if out else None, start_new_session=True,
                    preexec_fn=node_preexec(os.getpid(), self.stop_cfg.death_signal),
                )
        except BaseException:  # a stop signal or a failure half-way: stop what was started
            self.stop()
            raise
        return self

    def dead(self) -> dict[str, int]:
        """Nodes that have exited, with their exit codes."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def failed_required(self) -> dict[str, int]:
        req = {s.name for s in self.graph.nodes if s.required}
        return {n: c for n, c in self.dead().items() if n in req or c not in (0, None)}

    def tail(self, name: str, lines: int = 20) -> str:
        p = self.log_path(name)
        if not p or not p.exists():
            return ""
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float | None = None, order: list[str] | None = None) -> dict[str, int]:
        """SIGINT each node (in ``order`` first, if given, each waited for before the next),
        wait up to ``timeout`` (default ``stop_cfg.grace_s``), then SIGKILL the node's whole
        process group; what a node that exited leaves in its group gets ``stop_cfg.group_grace_s``
        to finish, then is killed too. A stop signal (or Ctrl-C) during the stop kills what is
        left at once. Returns every node's exit code; calling it again returns the same."""
        if self._codes is not None:
            return dict(self._codes)
        timeout = self.stop_cfg.grace_s if timeout is None else timeout
        STOP_SIGNALS.stopping += 1
        try:
            names = list(order or []) + [n for n in self.procs if n not in (order or [])]
            try:
                for n in names:
                    p = self.procs[n]
                    if p.poll() is None:
                        try:
                            p.send_signal(signal.SIGINT)
                        except ProcessLookupError:
                            pass
                    if order and n in order:  # ordered: wait for this one before the next
                        self._wait(n, timeout)
                for n in self.procs:
                    self._wait(n, timeout)
            except KeyboardInterrupt:  # Ctrl-C while stopping: no more waiting
                STOP_SIGNALS.hurried = True
                for n in self.procs:
                    self._wait(n, 0.0)
            for n, p in self.procs.items():  # grandchildren: nothing of a node outlives the stop
                left = reap_group(p.pid, 0.0 if STOP_SIGNALS.hurry() else self.stop_cfg.group_grace_s,
                                  self.stop_cfg.poll_s)
                if left:
                    self.killed.setdefault(n, []).extend(left)
        finally:
            STOP_SIGNALS.stopping -= 1
            for f in self._logs.values():
                f.close()
            self._tmp.cleanup()
            if self._signals:
                stop_signals_release()
                self._signals = False
        self._codes = {n: p.returncode for n, p in self.procs.items()}
        return dict(self._codes)

    def _wait(self, name: str, timeout: float) -> None:
        p = self.procs[name]
        deadline = time.monotonic() + timeout
        while p.poll() is None and time.monotonic() < deadline and not STOP_SIGNALS.hurry():
            time.sleep(self.stop_cfg.poll_s)
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.killed.setdefault(name, []).append(p.pid)
            p.wait(timeout=10)

    def wait(self, poll: float = 0.5) -> None:
        """Block until a required node exits, every node has exited, or Ctrl-C."""
        while not self.failed_required() and any(p.poll() is None for p in self.procs.values()):
            time.sleep(poll)

    def run(self, out=None) -> int:
        """``vla-rl-ros run``: start (if not started), run until a required node ends, every node
        ended, or Ctrl-C / SIGTERM / SIGHUP; stop in order; report; return an exit code
        (:data:`EXIT_CLEAN`, :data:`EXIT_NODE_FAILED` or :data:`EXIT_UNCLEAN_STOP`)."""
        out = out or sys.stderr
        reason = "the graph ended"
        failed: dict[str, int] = {}
        try:
            if not self.procs:
                self.start()
            self.wait()
        except KeyboardInterrupt as e:
            reason = f"stopped by {signal.Signals(getattr(e, 'signum', signal.SIGINT)).name}"
            print(f"\n{reason}: stopping {', '.join(self.procs) or 'nothing'} ...", file=out, flush=True)
        failed = {n: c for n, c in self.dead().items() if c != 0}
        t0 = time.monotonic()
        codes = self.stop()
        unclean = {n: c for n, c in codes.items() if n not in failed and (n in self.killed or c not in _CLEAN_AT_STOP)}
        for n, c in failed.items():
            print(f"node {n} exited with code {c} while the graph was running", file=out)
            if self.log_dir:
                print(self.tail(n), file=out)
        for n, c in unclean.items():
            how = (f"was killed (no exit within {self.stop_cfg.grace_s:.0f} s)" if n in self.killed and
                   self.procs[n].pid in self.killed[n] else
                   f"left processes {self.killed[n]} that were killed" if n in self.killed else f"exited with code {c}")
            print(f"node {n} {how} when stopped", file=out)
        print(f"{self.graph.name}: {reason}; every node stopped in {time.monotonic() - t0:.1f} s", file=out, flush=True)
        if failed:
            return EXIT_NODE_FAILED
        return EXIT_UNCLEAN_STOP if unclean else EXIT_CLEAN

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
