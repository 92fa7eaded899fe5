"""Non-blocking, crash-safe episode writer for the trajectory_logger.

Usage (from a ROS node, or anything with a loop that must not stall)::

    feats = make_features(RobotSpec().joint_names, cameras=["front"], image_shape=(224, 224))
    writer = EpisodeWriter("data/run1", fps=30, features=feats, on_saved=print)
    writer.submit(frames, task="pick up the red cube", meta={"seed": 3})  # returns at once
    ...
    writer.close(timeout=60)  # drains: every submitted episode saved (or reported failed)

Pipeline of one episode
-----------------------
1. ``submit()`` (caller's thread, ~1-3 ms for 300 frames): validates every frame (fields,
   shapes, dtypes, finite state/action...) and raises ``ValueError`` naming the field and
   frame; stacks the small columns; queues the episode. Nothing is written yet, so a refused
   episode cannot affect the dataset.
2. *spool thread* (in the caller's process, almost only GIL-free file writes): writes the
   episode as a spool entry ``<root>/.vla_spool/ep-*`` (one ``.npy`` per field, fsynced,
   atomic rename). From here on the episode survives a crash of anything.
3. *worker* (a separate process by default; ``mode="thread"`` runs it in the caller's
   process): PNG-encodes the images, runs lerobot's ``save_episode`` + ``finalize`` on a
   staging copy and commits the new files into the root by atomic renames with a redo log
   (see :mod:`vla_rl_ros.core.data.store`). Then it reports the episode as *saved*.

Why a process: PNG encoding, parquet writing, stats and the ``datasets`` machinery hold the
GIL for long stretches; in a thread they stall the caller's executor (see
``bench/logger_save.py``). The worker only receives a path through a pipe.

Crash safety
------------
* ``kill -9`` of the owner: the worker keeps the root's lock, finishes the episodes already
  handed to it, and exits. ``kill -9`` of the whole process group: the worker dies too, maybe
  mid-commit. In both cases ``LeRobotDataset(repo_id, root=root)`` loads at every instant,
  with every episode reported saved (the commit protocol never exposes a partial file).
* The next ``EpisodeWriter`` on the same root (or :func:`recover`) rolls an interrupted commit
  forward, and replays spooled-but-unsaved episodes (reported with ``recovered=True``).
* Reopening an existing root appends (episode indices continue). Features/fps must match.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import schema
from .spool import (
    RootLock,
    check_root_writable,
    clean_spool_tmp,
    list_spool,
    quarantine_spool_entry,
    remove_spool_if_empty,
    to_jsonable,
    write_spool_entry,
)
from .store import read_info, read_repo_id

log = logging.getLogger(__name__)

_PKG_PARENT = str(Path(__file__).resolve().parents[3])


def _close_at_exit(ref) -> None:
    """Interpreter exit without close(): make queued episodes durable (spooled) and let the
    worker finish them on its own; do not wait for the saves."""
    w = ref()
    if w is None or w._closed:
        return
    w._closing = True
    w._spool_q.put(None)
    w._spooler.join(60)
    with w._send_lock:
        if w._cmd_w is not None:
            try:
                os.close(w._cmd_w)  # EOF: the worker drains what it was sent, then exits
            except OSError:
                pass
            w._cmd_w = None


@dataclass(frozen=True)
class SavedEpisode:
    """An episode the worker has committed to the dataset."""

    ticket: int | None  #: value returned by submit() (None/old value for recovered ones)
    episode_index: int
    frames: int
    task: str
    seconds: float  #: background save time (PNG + lerobot save + commit)
    latency: float | None  #: submit() -> saved, seconds (None if recovered)
    recovered: bool = False  #: replayed from a previous session's spool
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FailedEpisode:
    ticket: int | None
    error: str
    entry: str | None = None  #: spool entry name (kept under .vla_spool/failed/)


# ----------------------------------------------------------------------------- validation
class _Spec:
    """Per-field checks derived from a LeRobot features dict."""

    def __init__(self, features: dict):
        self.keys = schema.user_keys(features)
        self.keyset = set(self.keys)
        self.images, self.vectors, self.scalars = [], [], []
        self.shape, self.dtype = {}, {}
        for k in self.keys:
            ft = features[k]
            self.shape[k] = tuple(int(s) for s in ft["shape"])
            self.dtype[k] = ft["dtype"]
            if ft["dtype"] in ("image", "video"):
                if len(self.shape[k]) != 3 or self.shape[k][2] != 3:
                    raise ValueError(f"feature {k!r}: images must have shape (H, W, 3), got {self.shape[k]}")
                if ft["dtype"] == "video" and min(self.shape[k][:2]) < schema.MIN_VIDEO_SIDE:
                    raise ValueError(
                        f"feature {k!r}: video frames must be at least {schema.MIN_VIDEO_SIDE} px a side, "
                        f"got {self.shape[k][:2]} (the AV1 encoder crashes); store it as dtype 'image'"
                    )
                self.images.append(k)
            elif ft["dtype"] == "string":
                raise ValueError(f"feature {k!r}: string features are not supported (use task/meta)")
            elif schema.is_scalar(ft):
                self.scalars.append(k)
            else:
                self.vectors.append(k)
        self.finite = [k for k in schema.FINITE_KEYS if k in self.keyset]


def _describe(v) -> str:
    if isinstance(v, np.ndarray):
        return f"array dtype={v.dtype} shape={v.shape}"
    return f"{type(v).__name__} {v!r}"[:120]


def _dtype_ok(target: str, kind: str) -> bool:
    if target.startswith("float"):
        return kind in "fiu"
    if target.startswith(("int", "uint")):
        return kind in "iu"
    if target == "bool":
        return kind in "biu"
    return False


def validate_episode(frames: Sequence[Mapping], task: str, features: dict | _Spec):
    """Check an episode and return ``(columns, images)`` ready to spool.

    ``columns``: field -> stacked array (``(N, dof)`` float32 vectors, ``(N,)`` scalars in the
    feature's dtype); ``images``: camera field -> list of N ``(H, W, 3)`` uint8 arrays.
    Raises ValueError naming the field (and frame) at the first problem.
    """
    spec = features if isinstance(features, _Spec) else _Spec(features)
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f"task must be a non-empty string (the instruction), got {task!r}")
    if frames is None or len(frames) == 0:
        raise ValueError("empty episode: frames is empty")
    n = len(frames)
    keyset = spec.keyset
    for i, fr in enumerate(frames):
        if not isinstance(fr, Mapping):
            raise ValueError(f"frame {i} is a {type(fr).__name__}, expected a dict of field -> value")  # noqa: TRY004 (one error type for bad episodes)
        if fr.keys() != keyset:
            missing = sorted(keyset - set(fr))
            extra = sorted(set(fr) - keyset)
            raise ValueError(f"frame {i}: missing fields {missing}, unexpected fields {extra}")

    images = {}
    for k in spec.images:
        shape = spec.shape[k]
        lst = [fr[k] for fr in frames]
        for i, a in enumerate(lst):
            if type(a) is not np.ndarray or a.dtype != np.uint8 or a.shape != shape:
                raise ValueError(
                    f"field {k!r} (frame {i}): expected uint8 array of shape {shape} (H, W, RGB), got {_describe(a)}"
                )
        images[k] = lst

    cols = {}
    for k in spec.vectors + spec.scalars:
        target = spec.dtype[k]
        want = (n, *spec.shape[k]) if k in spec.vectors else (n,)
        lst = [fr[k] for fr in frames]
        try:
            arr = np.asarray(lst)
        except (ValueError, TypeError):
            arr = None
        if arr is not None and k in spec.scalars and arr.shape == (n, 1):
            arr = arr.reshape(n)
        if arr is None or arr.shape != want or not _dtype_ok(target, arr.dtype.kind):
            one = want[1:]
            for i, v in enumerate(lst):
                a = np.asarray(v) if isinstance(v, (np.ndarray, np.generic, int, float, bool, list, tuple)) else None
                if k in spec.scalars and a is not None and a.shape == (1,):
                    a = a.reshape(())
                if a is None or a.shape != one or not _dtype_ok(target, a.dtype.kind):
                    what = f"shape {one} {target}" if one else f"a scalar {target}"
                    raise ValueError(f"field {k!r} (frame {i}): expected {what}, got {_describe(v)}")
            raise ValueError(f"field {k!r}: inconsistent values across frames")
        if target == "bool" and arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"field {k!r}: expected bool values, got {arr.dtype} outside 0/1")
        cols[k] = arr.astype(np.dtype(target), copy=True)

    for k in spec.finite:
        a = cols[k]
        if not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a.reshape(n, -1)).all(axis=1))[0, 0]
            raise ValueError(f"field {k!r} (frame {int(bad)}): contains NaN/Inf")
    return cols, images


# ----------------------------------------------------------------------------- the writer
class EpisodeWriter:
    """Writes whole episodes to a LeRobot dataset in the background (see module docstring).

    Args:
        root: dataset directory (created if missing; an existing dataset is appended to).
        repo_id: LeRobot repo id; default: the one recorded in the root, else ``local/<dir name>``.
        fps: control rate of the recorded steps.
        features: LeRobot features (e.g. :func:`~.schema.make_features`); optional when
            ``root`` already holds a dataset (then its features are used).
        robot_type: LeRobot's ``robot_type``.
        mode: ``"process"`` (default) or ``"thread"`` for the background saver.
        on_saved / on_error: callbacks called *from a background thread* with a
            :class:`SavedEpisode` / :class:`FailedEpisode`; keep them short (or use ``poll()``).
        durable: fsync spool entries and commits (default True).
        png_compress_level: zlib level of the PNGs in parquet (1 = fast; lerobot uses 6).
        image_threads: PNG encoding threads in the worker.
        lock_timeout: seconds to wait for another writer (e.g. a dying one) to release the root.
        worker_nice: niceness added to the worker process (keeps the control loop ahead).

    Raises:
        PermissionError / ValueError: the root cannot be created or written (message has the
            path), the root's dataset has other features/fps, or features are missing.
        RuntimeError: another writer holds the root for longer than ``lock_timeout``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        repo_id: str | None = None,
        fps: int = 30,
        features: dict | None = None,
        robot_type: str | None = schema.DEFAULT_ROBOT_TYPE,
        *,
        mode: str = "process",
        on_saved: Callable[[SavedEpisode], None] | None = None,
        on_error: Callable[[FailedEpisode], None] | None = None,
        durable: bool = True,
        png_compress_level: int = 1,
        image_threads: int = 2,
        lock_timeout: float | None = 30.0,
        worker_nice: int = 5,
        start_timeout: float = 120.0,
    ):
        # long on purpose (~100 lines, most of them the argument list and its checks): opening a
        # dataset for append must validate, lock and recover in this order before anything is written
        if mode not in ("process", "thread"):
            raise ValueError(f"mode must be 'process' or 'thread', got {mode!r}")
        self.root = check_root_writable(root)
        try:
            info = read_info(self.root)
        except ValueError as e:
            raise ValueError(f"{self.root / 'meta/info.json'} is corrupt: {e}") from e
        if info is not None:
            existing = schema.normalize_features(
                {k: v for k, v in info["features"].items() if k not in schema.LEROBOT_DEFAULT_KEYS}
            )
            if features is None:
                features = existing
            else:
                given = schema.normalize_features(
                    {k: v for k, v in features.items() if k not in schema.LEROBOT_DEFAULT_KEYS}
                )
                if given != existing:
                    diff = sorted(k for k in set(given) | set(existing) if given.get(k) != existing.get(k))
                    raise ValueError(
                        f"dataset at {str(self.root)!r} has different features; differing keys: {diff}"
                    )
            if int(info["fps"]) != int(fps):
                raise ValueError(f"dataset at {str(self.root)!r} was recorded at fps={info['fps']}, not {fps}")
            robot_type = info.get("robot_type", robot_type)
        if features is None:
            raise ValueError(f"features are required to create a new dataset at {str(self.root)!r}")
        self.features = schema.normalize_features(
            {k: v for k, v in features.items() if k not in schema.LEROBOT_DEFAULT_KEYS}
        )
        self._spec = _Spec(self.features)
        self.fps = int(fps)
        self.repo_id = repo_id or read_repo_id(self.root)
        self.robot_type = robot_type
        self.mode = mode
        self.durable = durable
        self._on_saved, self._on_error = on_saved, on_error
        self._cfg = {
            "root": str(self.root),
            "repo_id": self.repo_id,
            "fps": self.fps,
            "features": to_jsonable(self.features),
            "robot_type": robot_type,
            "use_videos": any(ft["dtype"] == "video" for ft in self.features.values()),
            "png_compress_level": int(png_compress_level),
            "image_threads": int(image_threads),
            "durable": durable,
        }
        self._nice = int(worker_nice)
        self._start_timeout = start_timeout

        self._lock = RootLock(self.root)
        self._lock.acquire(lock_timeout)

        self._cv = threading.Condition()
        self._tickets = itertools.count()
        self._pending: dict[int, float] = {}  # ticket -> submit time (monotonic)
        self._outstanding: dict[int, dict] = {}  # ticket -> save command sent to the worker
        self._saved: list[SavedEpisode] = []
        self._failed: list[FailedEpisode] = []
        self._unpolled: list[SavedEpisode] = []
        self._closing = False
        self._closed = False
        self._worker_ready = threading.Event()
        self._worker_dead = False
        self.recovery: dict | None = None  #: the worker's start-up recovery report
        self._restarts = 0
        self._crashes: dict[int, int] = {}

        # leftovers from a previous session (we hold the lock: nobody else spools here now)
        clean_spool_tmp(self.root)
        self._replay = []
        for entry in list_spool(self.root):
            t = next(self._tickets)
            self._pending[t] = time.monotonic()
            self._replay.append({"op": "save", "entry": str(entry), "ticket": t, "recovered": True})

        self._spool_q: queue.Queue = queue.Queue()
        self._send_lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._cmd_w: int | None = None
        self._work_q: queue.Queue | None = None
        self._start_worker()
        for cmd in self._replay:
            self._send(cmd)
        self._spooler = threading.Thread(target=self._spool_loop, name="episode-spool", daemon=True)
        self._spooler.start()
        atexit.register(_close_at_exit, weakref.ref(self))

    # ------------------------------------------------------------------ public API
    def submit(self, frames: Sequence[Mapping], task: str, meta: dict | None = None) -> int:
        """Validate an episode and queue it for saving; returns a ticket at once.

        ``frames``: one dict per control step with every feature key (see
        :mod:`.schema`), values numpy arrays / numbers. Ownership passes to the writer:
        do not modify the arrays afterwards. ``meta``: JSON-serialisable extras stored in
        ``meta/vla_rl_ros/episode-XXXXXX.json``.

        Raises:
            ValueError: invalid episode (nothing is queued).
            RuntimeError: the writer is closed.
        """
        if self._closing:
            raise RuntimeError("EpisodeWriter is closed")
        cols, imgs = validate_episode(frames, task, self._spec)
        try:
            meta_j = to_jsonable(meta or {})
        except TypeError as e:
            raise ValueError(f"meta must be JSON-serialisable: {e}") from e
        if not isinstance(meta_j, dict):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")  # noqa: TRY004
        with self._cv:
            t = next(self._tickets)
            self._pending[t] = time.monotonic()
        self._spool_q.put((t, cols, imgs, task, meta_j, time.time()))
        return t

    def pending(self) -> int:
        """Episodes submitted (or found in the spool at start) and not yet saved or failed."""
        with self._cv:
            return len(self._pending)

    def saved_episodes(self) -> list[SavedEpisode]:
        """Every episode saved by this writer so far (including recovered ones), in order."""
        with self._cv:
            return list(self._saved)

    def failed_episodes(self) -> list[FailedEpisode]:
        with self._cv:
            return list(self._failed)

    def poll(self) -> list[SavedEpisode]:
        """Episodes saved since the last ``poll()`` (for a ROS timer instead of callbacks)."""
        with self._cv:
            out, self._unpolled = self._unpolled, []
            return out

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending (True) or ``timeout`` expires (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._pending:
                if self._worker_dead:
                    return False
                rem = None if deadline is None else deadline - time.monotonic()
                if rem is not None and rem <= 0:
                    return False
                self._cv.wait(0.2 if rem is None else min(rem, 0.2))
            return True

    @property
    def alive(self) -> bool:
        """False once the background worker died for good."""
        return not self._worker_dead

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting episodes, drain (spool + save everything queued), stop the worker.

        Returns True when everything submitted was saved (or reported failed) in time. On
        timeout the worker keeps going in the background (process mode) and exits by itself
        when done; spooled episodes are never lost (a later writer or :func:`recover` replays
        them).
        """
        if self._closed:
            return not self._pending
        self._closing = True
        deadline = None if timeout is None else time.monotonic() + timeout

        def rem():
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        self._spool_q.put(None)
        self._spooler.join(rem())
        drained = self.wait(rem())
        if self.mode == "process":
            with self._send_lock:
                if self._cmd_w is not None:
                    self._send({"op": "close"})  # after the saves already sent (FIFO)
                    try:
                        os.close(self._cmd_w)
                    except OSError:
                        pass
                    self._cmd_w = None
            if self._proc is not None and drained:
                try:
                    self._proc.wait(rem())
                except subprocess.TimeoutExpired:
                    pass
        else:
            if self._work_q is not None:
                self._work_q.put(None)
            if drained:
                self._thread.join(rem())
        if drained and (self._proc is None or self._proc.poll() is not None):
            remove_spool_if_empty(self.root)
        self._lock.release()
        self._closed = True
        return drained and not self._pending

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ internals
    def _spool_loop(self) -> None:
        info_base = {
            "keys": list(self._spec.keys),
            "dataset": self._cfg,
        }
        while True:
            item = self._spool_q.get()
            if item is None:
                return
            t, cols, imgs, task, meta, submitted = item
            try:
                info = dict(info_base, task=task, meta=meta, ticket=t, submitted_unix=submitted,
                            frames=len(next(iter(cols.values()))) if cols else len(next(iter(imgs.values()))))
                entry = write_spool_entry(self.root, t, cols, imgs, info, durable=self.durable)
            except Exception as e:  # noqa: BLE001  (disk full, ...)
                log.error("could not spool episode %d: %s", t, e)
                self._finish_failed(FailedEpisode(t, f"spool write failed: {type(e).__name__}: {e}"))
                continue
            del cols, imgs, item
            self._send({"op": "save", "entry": str(entry), "ticket": t, "recovered": False})

    def _send(self, cmd: dict) -> None:
        with self._send_lock:
            if cmd.get("op") == "save":
                with self._cv:
                    self._outstanding[cmd["ticket"]] = cmd
            if self.mode == "thread":
                self._work_q.put(cmd)
                return
            if self._cmd_w is None:
                return
            data = (json.dumps(cmd) + "\n").encode()
            try:
                while data:
                    n = os.write(self._cmd_w, data)
                    data = data[n:]
            except OSError as e:
                log.error("episode worker pipe closed (%s)", e)

    def _start_worker(self) -> None:
        init = {"op": "init", "cfg": self._cfg, "nice": self._nice}
        if self.mode == "thread":
            self._work_q = queue.Queue()
            self._work_q.put(init)
            self._thread = threading.Thread(target=self._thread_loop, name="episode-worker", daemon=True)
            self._thread.start()
            return
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        env = os.environ.copy()
        env["HF_HUB_OFFLINE"] = "1"
        env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "vla_rl_ros.core.data._worker", str(cmd_r), str(evt_w), str(self._lock.fd)],
            pass_fds=(cmd_r, evt_w, self._lock.fd),
            stdin=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._cmd_w = cmd_w
        self._send(init)
        self._reader = threading.Thread(target=self._event_loop, args=(evt_r, self._proc), name="episode-events",
                                        daemon=True)
        self._reader.start()

    def _thread_loop(self) -> None:
        from ._worker import WorkerCore

        core = None
        while True:
            cmd = self._work_q.get()
            if cmd is None:
                break
            if cmd["op"] == "init":
                try:
                    core = WorkerCore(cmd["cfg"])
                    self._on_event(core.start())
                except Exception as e:  # noqa: BLE001
                    self._on_event({"ev": "fatal", "error": f"{type(e).__name__}: {e}"})
                    return
            elif cmd["op"] == "save":
                self._on_event(core.handle(cmd))
        if core is not None:
            core.close()

    def _event_loop(self, fd: int, proc: subprocess.Popen) -> None:
        from ._worker import _lines

        try:
            for raw in _lines(fd):
                try:
                    ev = json.loads(raw)
                except ValueError:
                    continue
                self._on_event(ev)
        finally:
            os.close(fd)
        proc.wait()
        with self._cv:
            outstanding = list(self._outstanding.values())
        crashed = proc.returncode != 0
        if self._closed or not crashed or (self._closing and self._cmd_w is None):
            if outstanding:  # the worker is gone for good: what is left stays in the spool
                with self._cv:
                    self._worker_dead = True
                    self._cv.notify_all()
            return
        # the worker died while running (killed, OOM...): restart it; its episodes are spooled
        if self._restarts >= 5 or self._worker_fatal:
            log.error("episode worker died (rc=%s); giving up after %d restarts; %d episodes stay "
                      "in %s for the next writer", proc.returncode, self._restarts, len(outstanding),
                      self.root / ".vla_spool")
            with self._cv:
                self._worker_dead = True
                self._cv.notify_all()
            return
        # the episode being saved when it died is the oldest outstanding one (FIFO); one that
        # kills the worker twice is a poison pill: set it aside instead of crashing forever
        if outstanding:
            current = min(outstanding, key=lambda c: c["ticket"])
            n = self._crashes[current["ticket"]] = self._crashes.get(current["ticket"], 0) + 1
            if n >= 2:
                err = f"the save worker died (rc={proc.returncode}) twice on this episode"
                try:
                    quarantine_spool_entry(current["entry"], err)
                except OSError:
                    pass
                log.error("episode %s set aside in .vla_spool/failed: %s", current["ticket"], err)
                self._finish_failed(FailedEpisode(current["ticket"], err, Path(current["entry"]).name))
        self._restarts += 1
        log.error("episode worker died (rc=%s) with %d episodes outstanding; restarting",
                  proc.returncode, len(outstanding))
        with self._send_lock:
            if self._cmd_w is not None:
                try:
                    os.close(self._cmd_w)
                except OSError:
                    pass
                self._cmd_w = None
            self._start_worker()
            with self._cv:
                outstanding = list(self._outstanding.values())
            for cmd in outstanding:  # a duplicate is harmless: the worker skips a saved entry
                self._send(cmd)

    _worker_fatal = False

    def _on_event(self, ev: dict) -> None:
        kind = ev.get("ev")
        if kind == "ready":
            self.recovery = ev.get("recovery")
            self._worker_ready.set()
            if self.recovery and self.recovery.get("problems"):
                log.error("dataset %s has problems: %s", self.root, self.recovery["problems"])
        elif kind == "saved":
            t = ev.get("ticket")
            with self._cv:
                t0 = self._pending.pop(t, None)
                self._outstanding.pop(t, None)
                rec = SavedEpisode(
                    ticket=t,
                    episode_index=int(ev["episode_index"]),
                    frames=int(ev["frames"]),
                    task=ev["task"],
                    seconds=float(ev["seconds"]),
                    latency=None if (t0 is None or ev.get("recovered")) else time.monotonic() - t0,
                    recovered=bool(ev.get("recovered")),
                    meta=ev.get("meta") or {},
                )
                self._saved.append(rec)
                self._unpolled.append(rec)
                self._cv.notify_all()
            if self._on_saved is not None:
                try:
                    self._on_saved(rec)
                except Exception:
                    log.exception("on_saved callback failed")
        elif kind == "skipped":
            t = ev.get("ticket")
            with self._cv:
                self._pending.pop(t, None)
                self._outstanding.pop(t, None)
                self._cv.notify_all()
        elif kind == "failed":
            log.error("episode %s could not be saved: %s", ev.get("ticket"), ev.get("error"))
            self._finish_failed(FailedEpisode(ev.get("ticket"), ev.get("error", "?"), ev.get("entry")))
        elif kind == "fatal":
            log.error("episode worker could not start: %s", ev.get("error"))
            self._worker_fatal = True
            with self._cv:
                self._worker_dead = True
                self._cv.notify_all()

    def _finish_failed(self, rec: FailedEpisode) -> None:
        with self._cv:
            self._pending.pop(rec.ticket, None)
            self._outstanding.pop(rec.ticket, None)
            self._failed.append(rec)
            self._cv.notify_all()
        if self._on_error is not None:
            try:
                self._on_error(rec)
            except Exception:
                log.exception("on_error callback failed")
