"""Crash-safe appends of whole episodes to a LeRobot v3.0 dataset, with lerobot's own writer.

What lerobot 0.4.4 writes, and when (``LeRobotDataset.save_episode`` / ``finalize``):

* ``meta/info.json`` and ``meta/stats.json``: rewritten in place (``open(..., "w")``) at every
  ``save_episode``; a kill during the write leaves truncated JSON.
* ``meta/tasks.parquet``: rewritten in place (``DataFrame.to_parquet``) when a task is new.
* ``data/chunk-C/file-F.parquet``: a ``pyarrow.ParquetWriter`` kept *open across episodes*;
  the footer is written only by ``finalize()``. Before that the file is not a parquet file.
* ``meta/episodes/chunk-C/file-F.parquet``: episode rows are buffered in memory
  (``metadata_buffer_size`` = 10) and written through a second open ``ParquetWriter``.
* ``images/...``: temporary PNGs (``videos/...`` mp4 for video features).

So a kill at almost any moment of plain lerobot recording leaves a root that
``LeRobotDataset(repo_id, root=root)`` cannot load (missing footers, ``total_episodes``
ahead of the episode rows, truncated JSON). And after ``finalize()`` the same object cannot
keep appending (its next flush re-opens and truncates the same files).

The design here: **stage with lerobot, then commit by atomic renames with a redo log.**

1. The episode is first durable in the spool (see :mod:`.spool`).
2. ``<root>/.vla_staging/ds`` is made a one-episode *resume* of the dataset: lerobot's
   ``LeRobotDataset.create`` there, then the root's ``meta/info.json``, ``stats.json``,
   ``tasks.parquet`` and its *last* ``meta/episodes`` file are copied in and the metadata is
   re-loaded with ``LeRobotDatasetMetadata`` (lerobot's resume path: it continues the
   episode/frame/task indices, aggregates the stats, and puts the new episode in the *next*
   data/episodes files). No data file of the root is read or touched.
3. ``save_episode(episode_data=...)`` + ``finalize()`` write complete, footer-closed files in
   the staging copy.
4. ``COMMIT.json`` (fsynced, atomic) lists the moves: new ``data/``, ``videos/``,
   ``meta/episodes/`` files and our ``meta/vla_rl_ros/episode-XXXXXX.json`` first, then
   ``meta/tasks.parquet``, ``meta/stats.json``, and ``meta/info.json`` **last** (the commit
   point: ``total_episodes`` grows by one), then deleting the spool entry.
5. The moves are ``os.replace`` within one file system, then directories are fsynced.

Every intermediate state loads with ``LeRobotDataset``: all parquet files under ``data/`` and
``meta/episodes/`` are always complete, JSON files are replaced atomically, and until
``info.json`` moves the new episode's rows are simply beyond ``total_episodes``. A kill
after ``COMMIT.json`` exists is rolled forward by :func:`recover` (idempotent); a kill
before it leaves the root untouched and the episode still in the spool, replayed later.
An entry is deleted from the spool only as the last step of its commit, so a replay can
never duplicate an episode.

Writers take ``<root>/.vla_writer.lock`` (flock), so two never interleave.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import schema
from .spool import (
    SIDE_META_DIR,
    STAGING_DIR,
    RootLock,
    atomic_write_json,
    clean_spool_tmp,
    fsync_dir,
    fsync_file,
    list_spool,
    quarantine_spool_entry,
    read_spool_entry,
    remove_spool_if_empty,
)

log = logging.getLogger(__name__)

COMMIT_FILE = "COMMIT.json"
INFO_REL = "meta/info.json"
STATS_REL = "meta/stats.json"
TASKS_REL = "meta/tasks.parquet"
EPISODES_REL = "meta/episodes"
DATASET_JSON_REL = f"{SIDE_META_DIR}/dataset.json"


def default_repo_id(root: str | os.PathLike) -> str:
    """The repo_id used when none is given: ``local/<root dir name>``."""
    name = Path(root).resolve().name or "dataset"
    return f"local/{name}"


def read_info(root: str | os.PathLike) -> dict | None:
    p = Path(root) / INFO_REL
    if not p.is_file():
        return None
    return json.loads(p.read_text())


def read_repo_id(root: str | os.PathLike) -> str:
    """repo_id recorded by our writer in ``meta/vla_rl_ros/dataset.json``, else the default."""
    p = Path(root) / DATASET_JSON_REL
    try:
        return str(json.loads(p.read_text())["repo_id"])
    except (OSError, ValueError, KeyError):
        return default_repo_id(root)


@contextlib.contextmanager
def _datasets_cache(path: Path):
    """Point HF ``datasets``' cache at ``path`` (throw-away) for the lifetime of the block.

    ``LeRobotDatasetMetadata`` loads ``meta/episodes`` through ``Dataset.from_parquet``, which
    caches an Arrow copy keyed by file path; staging paths are new every episode, so the
    default cache (~/.cache/huggingface/datasets) would grow by one entry per episode.
    """
    import datasets.config as dcfg

    old = dcfg.HF_DATASETS_CACHE
    path.mkdir(parents=True, exist_ok=True)
    dcfg.HF_DATASETS_CACHE = path
    try:
        yield
    finally:
        dcfg.HF_DATASETS_CACHE = old


def _no_progress_bars() -> None:
    import datasets

    datasets.disable_progress_bars()


class _DropTorchcodecWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "torchcodec" not in str(record.msg) and "Using video codec" not in str(record.msg)


def _quiet_lerobot() -> None:
    """Silence lerobot's per-call chatter (progress bars, the torchcodec fallback warning).

    (The worker process also runs with HF_HUB_OFFLINE=1; in-process we never hand lerobot a
    root that lacks a file it would otherwise try to download.)
    """
    _no_progress_bars()
    rootlog = logging.getLogger()
    if not any(isinstance(f, _DropTorchcodecWarning) for f in rootlog.filters):
        rootlog.addFilter(_DropTorchcodecWarning())


# ------------------------------------------------------------------------ recovery
def roll_forward(root: str | os.PathLike, *, durable: bool = True) -> dict | None:
    """Finish or discard an interrupted commit in ``<root>/.vla_staging``.

    Returns the finished manifest (dict) if a commit was rolled forward, else None.
    """
    root = Path(root)
    staging = root / STAGING_DIR
    if not staging.exists():
        return None
    manifest_path = staging / COMMIT_FILE
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = None  # torn manifest: it was never renamed into place -> not committed
    if manifest is not None:
        _apply_manifest(root, staging, manifest, durable=durable)
        log.warning("rolled forward interrupted commit of episode %s", manifest.get("episode_index"))
    shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _crash_point(name: str, episode: int | None = None) -> None:
    """Test hooks. ``VLA_RL_ROS_CRASH_AT=<name>`` SIGKILLs this process at that point.
    ``VLA_RL_ROS_PAUSE_AT=<name>@<episode>`` with ``VLA_RL_ROS_PAUSE_FILE=<path>``: on reaching
    that point while saving that episode, write ``<path>`` and wait there until ``<path>.go``
    exists (a test kills the process while it is provably inside the commit)."""
    if os.environ.get("VLA_RL_ROS_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    pause, flag = os.environ.get("VLA_RL_ROS_PAUSE_AT"), os.environ.get("VLA_RL_ROS_PAUSE_FILE")
    if pause and flag and pause == f"{name}@{episode}":
        Path(flag).write_text(json.dumps({"point": name, "episode": episode, "pid": os.getpid()}))
        while not Path(flag + ".go").exists():
            time.sleep(0.01)


def _apply_manifest(root: Path, staging: Path, manifest: dict, *, durable: bool) -> None:
    touched: set[Path] = set()
    for i, (src_rel, dst_rel) in enumerate(manifest["moves"]):
        src = staging / src_rel
        dst = root / dst_rel
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            touched.add(dst.parent)
        _crash_point(f"after_move_{i}")
    spool_entry = manifest.get("spool_entry")
    if spool_entry:
        p = root / spool_entry
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)
            touched.add(p.parent)
    if durable:
        for d in touched:
            fsync_dir(d)


def check_consistency(root: str | os.PathLike) -> list[str]:
    """Problems that would stop ``LeRobotDataset`` from loading ``root`` (empty = fine)."""
    import pyarrow.parquet as pq

    root = Path(root)
    problems = []
    info = None
    try:
        info = read_info(root)
    except ValueError as e:
        problems.append(f"{INFO_REL} is not valid JSON: {e}")
    if info is None:
        if (root / "data").exists():
            problems.append(f"{INFO_REL} missing but data/ exists")
        return problems
    for sub in ("data", EPISODES_REL):
        for p in sorted((root / sub).glob("*/*.parquet")):
            try:
                pq.read_metadata(p)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{p.relative_to(root)} is not a complete parquet file ({e})")
    n_rows = 0
    for p in sorted((root / EPISODES_REL).glob("*/*.parquet")):
        with contextlib.suppress(Exception):
            n_rows += pq.read_metadata(p).num_rows
    if n_rows < info.get("total_episodes", 0):
        problems.append(
            f"info.json says {info['total_episodes']} episodes but meta/episodes has {n_rows} rows"
        )
    return problems


# ------------------------------------------------------------------------ the store
class DatasetStore:
    """Appends spooled episodes to the dataset at ``root`` (see the module docstring).

    Must be used by a single writer holding the root's lock. Imports lerobot.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        repo_id: str,
        fps: int,
        features: dict,
        robot_type: str | None = schema.DEFAULT_ROBOT_TYPE,
        *,
        use_videos: bool | None = None,
        png_compress_level: int = 1,
        image_threads: int = 2,
        durable: bool = True,
    ):
        _quiet_lerobot()
        self.root = Path(root)
        self.repo_id = repo_id
        self.fps = int(fps)
        self.features = {k: dict(v, shape=tuple(v["shape"])) for k, v in features.items()
                         if k not in schema.LEROBOT_DEFAULT_KEYS}
        self.robot_type = robot_type
        self.use_videos = (
            any(ft["dtype"] == "video" for ft in self.features.values()) if use_videos is None else use_videos
        )
        self.png_compress_level = int(png_compress_level)
        self.image_threads = max(1, int(image_threads))
        self.durable = durable
        self.staging = self.root / STAGING_DIR
        self._pool = ThreadPoolExecutor(self.image_threads, thread_name_prefix="png") if self.image_threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- recovery at start
    def recover(self) -> dict:
        """Roll an interrupted commit forward (the spool is the owner's business)."""
        manifest = roll_forward(self.root, durable=self.durable)
        return {
            "rolled_forward": None if manifest is None else manifest.get("episode_index"),
            "problems": check_consistency(self.root),
        }

    # -- one episode
    def save(self, entry: str | os.PathLike) -> dict:
        """Append the spool entry ``entry`` to the dataset; returns a summary dict.

        On failure the root is unchanged, the staging copy is removed and the exception is
        re-raised (the caller decides whether to quarantine the entry).
        """
        t0 = time.perf_counter()
        entry = Path(entry)
        info, cols = read_spool_entry(entry)
        try:
            result = self._save(entry, info, cols)
        except Exception:
            # before the redo log exists the root is untouched: drop the staging copy. After
            # it, _save has already retried the commit; what is left is for recovery.
            if not (self.staging / COMMIT_FILE).exists():
                shutil.rmtree(self.staging, ignore_errors=True)
            raise
        result["seconds"] = time.perf_counter() - t0
        return result

    def _open_staging(self):
        from lerobot.datasets.lerobot_dataset import (
            LeRobotDataset,
            LeRobotDatasetMetadata,
        )

        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        stage = self.staging / "ds"
        ds = LeRobotDataset.create(
            self.repo_id,
            self.fps,
            self.features,
            root=stage,
            robot_type=self.robot_type,
            use_videos=self.use_videos,
        )
        copied: set[str] = set()
        root_info = read_info(self.root)
        if root_info is not None and root_info.get("total_episodes", 0) > 0:
            for rel in (INFO_REL, STATS_REL, TASKS_REL):
                if (self.root / rel).is_file():
                    shutil.copy2(self.root / rel, stage / rel)
            # lerobot's resume path only needs the last episode row (file indices and
            # dataset_to_index); a one-row copy without the stats columns loads ~10x faster
            import pyarrow.parquet as pq

            last = max((self.root / EPISODES_REL).glob("*/*.parquet"))
            rel = str(last.relative_to(self.root))
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            cols = [c for c in pq.read_schema(last).names if not c.startswith("stats/")]
            table = pq.read_table(last, columns=cols)
            pq.write_table(table.slice(table.num_rows - 1, 1), stage / rel)
            copied.add(rel)
            with _datasets_cache(self.staging / "hf_cache"):
                ds.meta = LeRobotDatasetMetadata(self.repo_id, root=stage)
        return ds, stage, copied

    def _write_pngs(self, stage: Path, key: str, ep: int, frames: np.ndarray) -> list[str]:
        import PIL.Image
        from lerobot.datasets.utils import DEFAULT_IMAGE_PATH

        paths = [str(stage / DEFAULT_IMAGE_PATH.format(image_key=key, episode_index=ep, frame_index=i))
                 for i in range(len(frames))]
        Path(paths[0]).parent.mkdir(parents=True, exist_ok=True)
        level = self.png_compress_level

        def one(i):
            PIL.Image.fromarray(np.asarray(frames[i])).save(paths[i], compress_level=level)

        if self._pool is not None:
            list(self._pool.map(one, range(len(frames))))
        else:
            for i in range(len(frames)):
                one(i)
        return paths

    def _save(self, entry: Path, info: dict, cols: dict[str, np.ndarray]) -> dict:
        n = int(info["frames"])
        task = info["task"]
        ds, stage, copied = self._open_staging()
        ep = int(ds.meta.total_episodes)

        buf: dict = {
            "size": n,
            "task": [task] * n,
            "timestamp": (np.arange(n, dtype=np.float64) / self.fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": ep,
            "index": [],  # filled by lerobot
            "task_index": [],  # filled by lerobot
        }
        for key, ft in self.features.items():
            if ft["dtype"] in ("image", "video"):
                buf[key] = self._write_pngs(stage, key, ep, cols[key])
            else:
                buf[key] = np.asarray(cols[key])
        _no_progress_bars()  # lerobot's SuppressProgressBars re-enables them on exit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ds.save_episode(episode_data=buf, parallel_encoding=False)
        ds.finalize()
        shutil.rmtree(stage / "images", ignore_errors=True)

        # our side metadata: caller meta + provenance
        side_rel = f"{SIDE_META_DIR}/episode-{ep:06d}.json"
        side = {
            "episode_index": ep,
            "length": n,
            "task": task,
            "meta": info.get("meta") or {},
            "ticket": info.get("ticket"),
            "submitted_unix": info.get("submitted_unix"),
            "saved_unix": time.time(),
            "spool_entry": entry.name,
        }
        atomic_write_json(stage / side_rel, side, durable=False)
        dataset_json = {"repo_id": self.repo_id, "writer": "vla_rl_ros.core.data", "format": "lerobot v3.0"}
        atomic_write_json(stage / DATASET_JSON_REL, dataset_json, durable=False)

        # manifest: new files first, then tasks/stats, info.json last (commit point)
        last_names = [TASKS_REL, STATS_REL, INFO_REL]
        moves = []
        for p in sorted(stage.rglob("*")):
            if not p.is_file():
                continue
            rel = str(p.relative_to(stage))
            if rel in copied or rel in last_names or rel.startswith("images/"):
                continue
            if rel == DATASET_JSON_REL and (self.root / rel).exists():
                continue
            if not (rel.startswith(("data/", "videos/", "meta/"))):
                continue
            moves.append(rel)
        for rel in last_names:
            if (stage / rel).is_file():
                moves.append(rel)
        if self.durable:
            for rel in moves:
                fsync_file(stage / rel)
        spool_rel = str(entry.relative_to(self.root)) if entry.is_relative_to(self.root) else None
        manifest = {
            "episode_index": ep,
            "moves": [[f"ds/{rel}", rel] for rel in moves],
            "spool_entry": spool_rel,
        }
        _crash_point("before_manifest", ep)
        atomic_write_json(self.staging / COMMIT_FILE, manifest, durable=self.durable)
        _crash_point("after_manifest", ep)
        # from here on the episode is committed: finish the moves (retry once via roll_forward)
        try:
            _apply_manifest(self.root, self.staging, manifest, durable=self.durable)
        except OSError as e:
            log.warning("commit of episode %d interrupted (%s); retrying", ep, e)
            roll_forward(self.root, durable=self.durable)
        shutil.rmtree(self.staging, ignore_errors=True)
        return {"episode_index": ep, "frames": n, "task": task, "meta": side["meta"], "ticket": info.get("ticket")}


def store_from_entry(root: str | os.PathLike, info: dict, **kw) -> DatasetStore:
    cfg = info["dataset"]
    return DatasetStore(root, cfg["repo_id"], cfg["fps"], cfg["features"], cfg.get("robot_type"),
                        use_videos=cfg.get("use_videos"), **kw)


def recover(root: str | os.PathLike, *, replay: bool = True, lock_timeout: float | None = 30.0,
            durable: bool = True) -> dict:
    """Bring ``root`` back to its last consistent state and (optionally) replay the spool.

    * an interrupted commit with a complete ``COMMIT.json`` is rolled forward; a staging copy
      without one is discarded (the root was never touched);
    * half-written spool entries are removed;
    * with ``replay``, complete spool entries (episodes submitted but not yet saved when the
      writer died) are appended in submission order; an entry that fails is moved to
      ``.vla_spool/failed/``.

    Takes the root's writer lock (waits up to ``lock_timeout`` s for a live writer).
    Returns a report: ``rolled_forward`` (episode index or None), ``replayed`` (list of
    summaries), ``failed`` (list of (entry, error)), ``problems`` (consistency problems left).
    """
    root = Path(root)
    lock = RootLock(root)
    lock.acquire(lock_timeout)
    try:
        manifest = roll_forward(root, durable=durable)
        clean_spool_tmp(root)
        replayed, failed = [], []
        if replay:
            store = None
            for entry in list_spool(root):
                try:
                    info, _ = read_spool_entry(entry)
                    if store is None:
                        store = store_from_entry(root, info, durable=durable)
                    replayed.append(store.save(entry))
                except Exception as e:  # noqa: BLE001
                    log.error("replay of %s failed: %s", entry.name, e)
                    failed.append((entry.name, repr(e)))
                    with contextlib.suppress(OSError):
                        quarantine_spool_entry(entry, repr(e))
            if store is not None:
                store.close()
        remove_spool_if_empty(root)
        return {
            "rolled_forward": None if manifest is None else manifest.get("episode_index"),
            "replayed": replayed,
            "failed": failed,
            "problems": check_consistency(root),
        }
    finally:
        lock.release()


__all__ = [
    "DatasetStore",
    "check_consistency",
    "default_repo_id",
    "read_info",
    "read_repo_id",
    "recover",
    "roll_forward",
]
