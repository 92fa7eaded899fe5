"""Durable hand-off of finished episodes: the spool, file-system helpers, the writer lock.

numpy + json only (no lerobot/torch), so the process that owns an
:class:`~vla_rl_ros.core.data.writer.EpisodeWriter` stays light.

A spool entry is a directory ``<root>/.vla_spool/ep-<ns>-<pid>-<ticket>/`` holding one
``.npy`` file per feature (the whole episode's column; images as ``(N, H, W, 3)`` uint8) and
``episode.json`` (task, caller meta, frame count, and the dataset config: repo_id, fps,
robot_type, features, so an entry can be replayed on its own). It is written under a
``.tmp-`` name, fsynced, then renamed: an entry either exists completely or not at all.
Entries sort by name in submission order.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

SPOOL_DIR = ".vla_spool"
FAILED_DIR = "failed"
STAGING_DIR = ".vla_staging"
LOCK_FILE = ".vla_writer.lock"
SIDE_META_DIR = "meta/vla_rl_ros"  # our per-episode json files + dataset.json (repo_id)
ENTRY_JSON = "episode.json"


# ---------------------------------------------------------------- file-system helpers
def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory (makes renames/creations inside it durable)."""
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file + rename (readers see old or new, never half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj, *, durable: bool = True) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode(), durable=durable)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def to_jsonable(obj):
    """``obj`` converted to plain JSON types (numpy scalars/arrays, tuples); raises TypeError."""
    return json.loads(json.dumps(obj, default=_json_default))


# ---------------------------------------------------------------- root checks and lock
def check_root_writable(root: str | os.PathLike) -> Path:
    """Create ``root`` if needed and prove it is a writable directory.

    Raises:
        PermissionError: the directory cannot be created or written (message names the path).
        ValueError: ``root`` exists but is not a directory, or a parent is a file.
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise ValueError(f"dataset root {str(root)!r} exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise PermissionError(f"cannot create dataset root {str(root)!r}: {e.strerror}") from e
    except (NotADirectoryError, FileExistsError) as e:
        raise ValueError(f"cannot create dataset root {str(root)!r}: a parent is not a directory") from e
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise PermissionError(f"cannot create dataset root {str(root)!r}: {e.strerror}") from e
        raise ValueError(f"cannot create dataset root {str(root)!r}: {e}") from e
    probe = root / f".vla_write_probe-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"dataset root {str(root)!r} is not writable: {e.strerror}") from e
    return root


class RootLock:
    """An exclusive ``flock`` on ``<root>/.vla_writer.lock``: one writer per dataset root.

    The lock belongs to the open file description, so a worker process that inherits the
    descriptor keeps the root locked after the owner dies, until it exits itself.
    """

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, timeout: float | None = 10.0) -> None:
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    holder = ""
                    try:
                        holder = self.path.read_text().strip()
                    except OSError:
                        pass
                    raise RuntimeError(
                        f"dataset root {str(self.path.parent)!r} is locked by another writer"
                        f"{' (' + holder + ')' if holder else ''}; waited {timeout:.1f} s"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Close our descriptor. No explicit LOCK_UN: that would also unlock a worker process
        sharing the open file description; the lock goes when the last descriptor closes."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------- spool entries
def spool_dir(root: str | os.PathLike) -> Path:
    return Path(root) / SPOOL_DIR


def list_spool(root: str | os.PathLike) -> list[Path]:
    """Complete spool entries (submitted, not yet in the dataset), oldest first."""
    d = spool_dir(root)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("ep-"))


def clean_spool_tmp(root: str | os.PathLike) -> int:
    """Remove half-written spool entries (a crash while spooling). Returns how many."""
    d = spool_dir(root)
    n = 0
    if d.is_dir():
        for p in d.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


def remove_spool_if_empty(root: str | os.PathLike) -> None:
    """Remove ``.vla_spool`` (and an empty ``failed/``) when nothing is left in it."""
    d = spool_dir(root)
    for p in (d / FAILED_DIR, d):
        try:
            p.rmdir()
        except OSError:
            pass


def _write_npy_frames(path: Path, frames: list[np.ndarray], shape: tuple, durable: bool) -> None:
    """Write a list of equal-shape uint8 frames as one ``.npy`` of shape ``(N, *shape)``.

    Frame by frame, without stacking: each ``write`` releases the GIL, so the owning
    process's other threads keep running while an episode is spooled.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
              "fortran_order": False, "shape": (len(frames), *shape)}
    with open(path, "wb", buffering=0) as f:
        np.lib.format.write_array_header_2_0(f, header)
        f.writelines(memoryview(np.ascontiguousarray(fr)).cast("B") for fr in frames)
        if durable:
            os.fsync(f.fileno())


def write_spool_entry(
    root: str | os.PathLike,
    ticket: int,
    columns: dict[str, np.ndarray],
    images: dict[str, list[np.ndarray]],
    info: dict,
    *,
    durable: bool = True,
) -> Path:
    """Atomically create a spool entry; returns its final path."""
    d = spool_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    name = f"ep-{time.time_ns():020d}-{os.getpid()}-{ticket:06d}"
    tmp = d / f".tmp-{name}"
    tmp.mkdir()
    for key, arr in columns.items():
        with open(tmp / f"{key}.npy", "wb") as f:
            np.save(f, arr, allow_pickle=False)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    for key, frames in images.items():
        _write_npy_frames(tmp / f"{key}.npy", frames, tuple(frames[0].shape), durable)
    atomic_write_json(tmp / ENTRY_JSON, info, durable=durable)
    final = d / name
    os.rename(tmp, final)
    if durable:
        fsync_dir(d)
    return final


def read_spool_entry(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """``(info, columns)`` of a spool entry; image columns are memory-mapped."""
    path = Path(path)
    info = json.loads((path / ENTRY_JSON).read_text())
    cols = {}
    for key in info["keys"]:
        cols[key] = np.load(path / f"{key}.npy", mmap_mode="r", allow_pickle=False)
    return info, cols


def quarantine_spool_entry(path: str | os.PathLike, reason: str) -> Path:
    """Move an entry that failed to save to ``.vla_spool/failed/`` (kept, never retried)."""
    path = Path(path)
    failed = path.parent / FAILED_DIR
    failed.mkdir(exist_ok=True)
    dst = failed / path.name
    os.replace(path, dst)
    try:
        (dst / "ERROR.txt").write_text(reason)
    except OSError:
        pass
    return dst
