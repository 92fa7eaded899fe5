"""The background saver: runs :class:`~.store.DatasetStore` on spooled episodes.

Used two ways by :class:`~vla_rl_ros.core.data.writer.EpisodeWriter`:

* ``mode="process"`` (default): ``python -m vla_rl_ros.core.data._worker CMD_FD EVT_FD LOCK_FD``.
  Commands arrive as JSON lines on ``CMD_FD``, events leave as JSON lines on ``EVT_FD``. The
  worker inherits the root's lock descriptor, so the root stays locked until it exits. It
  ignores SIGINT (a Ctrl-C to the process group must not cut a save short; the owner's
  ``close()`` drains). On EOF of the command pipe (owner closed or died) it finishes what
  was already sent and exits.
* ``mode="thread"``: :class:`WorkerCore` is driven by a thread inside the owner.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path


class WorkerCore:
    """Config -> store; ``start()`` recovers the root; ``handle(cmd)`` -> event dict."""

    def __init__(self, cfg: dict):
        from .store import DatasetStore

        self.cfg = cfg
        self.store = DatasetStore(
            cfg["root"],
            cfg["repo_id"],
            cfg["fps"],
            cfg["features"],
            cfg.get("robot_type"),
            use_videos=cfg.get("use_videos"),
            png_compress_level=cfg.get("png_compress_level", 1),
            image_threads=cfg.get("image_threads", 2),
            durable=cfg.get("durable", True),
        )

    def start(self) -> dict:
        return {"ev": "ready", "recovery": self.store.recover(), "pid": os.getpid()}

    def handle(self, cmd: dict) -> dict:
        from .spool import quarantine_spool_entry

        entry = Path(cmd["entry"])
        base = {"ticket": cmd.get("ticket"), "entry": entry.name, "recovered": bool(cmd.get("recovered"))}
        if not entry.exists():
            # committed already (e.g. rolled forward by recovery): nothing to do
            return {"ev": "skipped", **base}
        try:
            res = self.store.save(entry)
        except Exception as e:  # noqa: BLE001
            err = f"{type(e).__name__}: {e}"
            tb = traceback.format_exc()
            try:
                quarantine_spool_entry(entry, tb)
            except OSError:
                pass
            return {"ev": "failed", "error": err, "traceback": tb, **base}
        return {"ev": "saved", **base, **res, "ticket": cmd.get("ticket")}

    def close(self) -> None:
        self.store.close()


def _send(fd: int, obj: dict) -> bool:
    data = (json.dumps(obj, default=str) + "\n").encode()
    try:
        while data:
            n = os.write(fd, data)
            data = data[n:]
        return True
    except (BrokenPipeError, OSError):
        return False  # owner is gone; keep working, nobody listens


def _lines(fd: int):
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            if buf.strip():
                yield buf
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd_fd, evt_fd, lock_fd = (int(a) for a in argv[:3])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    core = None
    closed_cleanly = False
    for raw in _lines(cmd_fd):
        cmd = json.loads(raw)
        op = cmd.get("op")
        if op == "init":
            try:
                nice = int(cmd.get("nice", 0))
                if nice:
                    os.nice(nice)
            except OSError:
                pass
            try:
                core = WorkerCore(cmd["cfg"])
                _send(evt_fd, core.start())
            except Exception as e:  # noqa: BLE001
                _send(evt_fd, {"ev": "fatal", "error": f"{type(e).__name__}: {e}",
                               "traceback": traceback.format_exc()})
                return 2
        elif op == "save":
            _send(evt_fd, core.handle(cmd))
        elif op == "close":
            closed_cleanly = True
            break
    if core is not None:
        core.close()
        from .spool import remove_spool_if_empty

        remove_spool_if_empty(core.store.root)  # still holding the root's lock
    _send(evt_fd, {"ev": "closed", "clean": closed_cleanly})
    os.close(lock_fd)
    return 0


def _exit(code: int) -> None:
    """The store is closed and the owner told: end without the interpreter's teardown (~1 s
    once torch is imported by lerobot; the owner's close() waits for this process)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
