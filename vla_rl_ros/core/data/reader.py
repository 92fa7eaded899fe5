"""Reading logged datasets: for ``collect``'s summary table, the replay node and the trainer.

* :func:`open_dataset` -- the ``LeRobotDataset`` (offline; repo_id from the root's metadata).
* :func:`episode_frames` -- one whole episode as numpy arrays, read column-wise from the
  parquet file (no per-item ``__getitem__``, no torch conversion): ~10x faster than
  iterating the ``LeRobotDataset``.
* :func:`episode_summaries` -- per-episode length, task, success and return, from a handful of
  parquet columns (images are never read).

Only episodes below ``meta/info.json``'s ``total_episodes`` are visible, so a reader that
races a writer's commit never sees a half-committed episode.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import schema
from .spool import SIDE_META_DIR
from .store import read_info, read_repo_id

_EP_COLS_BASE = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                 "dataset_from_index", "dataset_to_index")


def _root_of(ds_or_root) -> Path:
    if isinstance(ds_or_root, (str, os.PathLike)):
        return Path(ds_or_root)
    return Path(ds_or_root.root)


def _require_dataset(root: Path) -> dict:
    info = read_info(root)
    if info is None:
        raise FileNotFoundError(f"no LeRobot dataset at {str(root)!r} (meta/info.json missing)")
    if not any((root / "data").glob("*/*.parquet")):
        raise FileNotFoundError(f"dataset at {str(root)!r} has no episodes (no data/*/*.parquet)")
    return info


def parse_episode_list(text: str, n: int) -> list[int]:
    """Episode indices from a list such as ``"0,3,7"``, half-open ranges ``"0:250"`` / ``"500:"``,
    or both (``"0:10,20"``), of a dataset with ``n`` episodes; empty = all. In the order given, no repeats.
    Anything else, or an index outside the dataset, is a ``ValueError`` that says what is wrong."""
    if not str(text).strip():
        return list(range(n))

    def index(s: str, default: int, part: str) -> int:
        s = s.strip()
        if not s:
            return default
        if not s.lstrip("-").isdigit():
            raise ValueError(f"episodes {text!r}: {part!r} is not an index or a range a:b")
        return int(s)

    out: dict[int, None] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if ":" in part:
            a, b = part.split(":", 1)
            lo, hi = index(a, 0, part), index(b, n, part)
            if lo < 0 or hi > n or lo >= hi:
                raise ValueError(f"episodes {part!r}: range outside the dataset's 0:{n}, or empty")
            out.update(dict.fromkeys(range(lo, hi)))
        else:
            i = index(part, -1, part)
            if not 0 <= i < n:
                raise ValueError(f"episode {part!r} not in dataset (it has {n} episodes)")
            out[i] = None
    return list(out)


def open_dataset(root: str | os.PathLike, repo_id: str | None = None, **kwargs):
    """``LeRobotDataset(repo_id, root=root, **kwargs)``, offline.

    ``repo_id`` defaults to the one our writer recorded (``meta/vla_rl_ros/dataset.json``),
    else ``local/<dir name>`` (LeRobot does not check it for local datasets).

    Raises:
        FileNotFoundError: ``root`` holds no dataset with at least one episode (checked
            before LeRobot, which would otherwise try to download from the Hub).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    _require_dataset(root)
    return LeRobotDataset(repo_id or read_repo_id(root), root=root, **kwargs)


_TABLE_CACHE: dict = {}


def _commit_key(root: Path, *extra) -> tuple:
    """Changes whenever the writer commits (``meta/info.json`` is replaced last)."""
    try:
        mtime = (root / "meta" / "info.json").stat().st_mtime_ns
    except OSError:
        mtime = None
    return (str(root.resolve()), mtime) + extra


def _episodes_table(root: Path, total: int, extra_cols: tuple = ()) -> dict[int, dict]:
    """``episode_index -> row`` from ``meta/episodes`` (without the stats columns).

    Cached per commit: reading one episode after another does not re-read every metadata file.
    """
    key = _commit_key(root, "episodes", total, tuple(extra_cols))
    hit = _TABLE_CACHE.get(key)
    if hit is None:
        hit = _TABLE_CACHE[key] = _read_episodes_table(root, total, extra_cols)
        while len(_TABLE_CACHE) > 16:
            del _TABLE_CACHE[next(iter(_TABLE_CACHE))]
    return hit


def _read_episodes_table(root: Path, total: int, extra_cols: tuple = ()) -> dict[int, dict]:
    import pyarrow.parquet as pq

    rows: dict[int, dict] = {}
    for p in sorted((root / "meta/episodes").glob("*/*.parquet")):
        names = pq.read_schema(p).names
        cols = [c for c in names if c in _EP_COLS_BASE or c in extra_cols or c.startswith("videos/")]
        for r in pq.read_table(p, columns=cols).to_pylist():
            if r["episode_index"] < total:
                rows[int(r["episode_index"])] = r
    return rows


def _tasks(root: Path) -> list[str]:
    import pyarrow.parquet as pq

    key = _commit_key(root, "tasks")
    if key not in _TABLE_CACHE:
        t = pq.read_table(root / "meta/tasks.parquet").to_pandas()
        _TABLE_CACHE[key] = [str(name) for name in t.sort_values("task_index").index]
    return _TABLE_CACHE[key]


def _column_to_numpy(col, ft: dict | None, n: int):
    import pyarrow as pa

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    typ = col.type
    if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(n, -1) if n else flat.reshape(0, 0)
    return col.to_numpy(zero_copy_only=False)


def _decode_pngs(structs: list[dict], workers: int = 4) -> np.ndarray:
    import io

    import PIL.Image

    def dec(s):
        return np.asarray(PIL.Image.open(io.BytesIO(s["bytes"])).convert("RGB"))

    if len(structs) > 16 and workers > 1:
        with ThreadPoolExecutor(workers) as ex:
            imgs = list(ex.map(dec, structs))
    else:
        imgs = [dec(s) for s in structs]
    return np.stack(imgs) if imgs else np.zeros((0, 0, 0, 3), np.uint8)


def _decode_video(path: Path, from_ts: float, n: int, fps: int) -> np.ndarray:
    """Decode ``n`` frames starting at ``from_ts`` (s) from an mp4 with PyAV."""
    import av

    out = []
    tol = 0.5 / fps
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if from_ts > 0 and stream.time_base is not None:
            container.seek(int(from_ts / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else None
            if t is not None and t < from_ts - tol:
                continue
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) >= n:
                break
    if len(out) != n:
        raise RuntimeError(f"{path}: decoded {len(out)} frames from t={from_ts:.3f}s, expected {n}")
    return np.stack(out)


def episode_frames(ds_or_root, episode_index: int, keys: list[str] | None = None) -> dict:
    """One episode as numpy arrays, read column-wise from its parquet file.

    Args:
        ds_or_root: a ``LeRobotDataset`` or a dataset root path.
        episode_index: which episode.
        keys: restrict to these feature keys (default: all).

    Returns:
        ``{key: array}`` with one leading row per frame: images ``(N, H, W, 3)`` uint8,
        vectors ``(N, dof)``, scalars ``(N,)`` (LeRobot's own ``timestamp``, ``frame_index``,
        ``index``, ``episode_index``, ``task_index`` included), plus ``"task"``: the
        instruction (str).
    """
    import pyarrow.parquet as pq

    root = _root_of(ds_or_root)
    info = _require_dataset(root)
    total = int(info["total_episodes"])
    ep = int(episode_index)
    if not 0 <= ep < total:
        raise IndexError(f"episode {ep} out of range: the dataset at {str(root)!r} has {total} episodes")
    row = _episodes_table(root, total)[ep]
    parquet_keys, video_keys = _plan_keys(info, keys)

    path = root / info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
    cols = list(dict.fromkeys(parquet_keys + ["episode_index"]))
    table = pq.read_table(path, columns=cols, filters=[("episode_index", "=", ep)])
    return _frames_from_table(root, info, row, table, parquet_keys, video_keys, keys)


def _plan_keys(info: dict, keys) -> tuple[list[str], list[str]]:
    feats = info["features"]
    want = list(feats) if keys is None else list(keys)
    unknown = [k for k in want if k not in feats]
    if unknown:
        raise KeyError(f"unknown feature keys {unknown}; available: {sorted(feats)}")
    video_keys = [k for k in want if feats[k]["dtype"] == "video"]
    parquet_keys = [k for k in want if feats[k]["dtype"] != "video"]
    if "task_index" not in parquet_keys:
        parquet_keys.append("task_index")
    return parquet_keys, video_keys


def _frames_from_table(root: Path, info: dict, row: dict, table, parquet_keys, video_keys, keys) -> dict:
    feats = info["features"]
    n = table.num_rows
    out: dict = {}
    for k in parquet_keys:
        ft = feats.get(k)
        if ft is not None and ft["dtype"] == "image":
            out[k] = _decode_pngs(table.column(k).to_pylist())
        else:
            out[k] = _column_to_numpy(table.column(k), ft, n)
    for k in video_keys:
        vpath = root / info["video_path"].format(
            video_key=k, chunk_index=row[f"videos/{k}/chunk_index"], file_index=row[f"videos/{k}/file_index"]
        )
        out[k] = _decode_video(vpath, float(row[f"videos/{k}/from_timestamp"]), n, int(info["fps"]))
    tasks = _tasks(root)
    ti = out["task_index"]
    out["task"] = tasks[int(ti[0])] if n else ""
    if keys is not None and "task_index" not in keys:
        del out["task_index"]
    return out


def iter_episode_frames(ds_or_root, keys: list[str] | None = None, episodes=None):
    """Yield ``(episode_index, frames)`` for many episodes (default: all), in index order,
    reading each data file once — what bulk loaders (training) should use: reading episodes one
    by one with :func:`episode_frames` re-reads the shared parquet file every time.
    """
    import pyarrow.parquet as pq

    root = _root_of(ds_or_root)
    info = _require_dataset(root)
    total = int(info["total_episodes"])
    eps = list(range(total)) if episodes is None else sorted(int(e) for e in episodes)
    bad = [e for e in eps if not 0 <= e < total]
    if bad:
        raise IndexError(f"episodes {bad[:5]} out of range: the dataset at {str(root)!r} has {total} episodes")
    parquet_keys, video_keys = _plan_keys(info, keys)
    table_rows = _episodes_table(root, total)
    by_file: dict[tuple, list[int]] = {}
    for e in eps:
        r = table_rows[e]
        by_file.setdefault((int(r["data/chunk_index"]), int(r["data/file_index"])), []).append(e)
    cols = list(dict.fromkeys(parquet_keys + ["episode_index"]))
    for (ci, fi), file_eps in sorted(by_file.items(), key=lambda kv: kv[1][0]):
        path = root / info["data_path"].format(chunk_index=ci, file_index=fi)
        table = pq.read_table(path, columns=cols)
        ep_col = table.column("episode_index").to_numpy()
        for e in file_eps:
            idx = np.nonzero(ep_col == e)[0]
            yield e, _frames_from_table(root, info, table_rows[e], table.take(idx), parquet_keys, video_keys, keys)


def episode_summaries(root: str | os.PathLike) -> list[dict]:
    """Per-episode summary rows, ordered by episode index.

    Each dict: ``episode_index``, ``length``, ``task``, ``success`` (any ``next.success`` in
    the episode; None if the dataset has no such column), ``return`` (sum of
    ``next.reward``; None without it), and ``meta`` (what the writer's caller passed to
    ``submit(meta=...)``, {} for datasets written otherwise).
    """
    import pyarrow.parquet as pq

    root = Path(root)
    info = read_info(root)
    if info is None:
        raise FileNotFoundError(f"no LeRobot dataset at {str(root)!r} (meta/info.json missing)")
    total = int(info["total_episodes"])
    if total == 0:
        return []
    eps = _episodes_table(root, total)
    feats = info["features"]
    has_r, has_s = schema.REWARD in feats, schema.SUCCESS in feats
    ret = np.zeros(total, np.float64)
    succ = np.zeros(total, bool)
    if has_r or has_s:
        cols = ["episode_index"] + [k for k, h in ((schema.REWARD, has_r), (schema.SUCCESS, has_s)) if h]
        files = sorted({(r["data/chunk_index"], r["data/file_index"]) for r in eps.values()})
        for c, f in files:
            t = pq.read_table(root / info["data_path"].format(chunk_index=c, file_index=f), columns=cols)
            e = t.column("episode_index").to_numpy()
            keep = e < total
            e = e[keep]
            if has_r:
                r = t.column(schema.REWARD).to_numpy(zero_copy_only=False).astype(np.float64)[keep]
                np.add.at(ret, e, r)
            if has_s:
                s = t.column(schema.SUCCESS).to_numpy(zero_copy_only=False).astype(bool)[keep]
                np.logical_or.at(succ, e, s)
    out = []
    side_dir = root / SIDE_META_DIR
    for ep in range(total):
        r = eps.get(ep)
        if r is None:
            continue
        tasks = r["tasks"] or [""]
        meta = {}
        side = side_dir / f"episode-{ep:06d}.json"
        if side.is_file():
            try:
                meta = json.loads(side.read_text()).get("meta") or {}
            except (OSError, ValueError):
                meta = {}
        out.append({
            "episode_index": ep,
            "length": int(r["length"]),
            "task": tasks[0] if len(tasks) == 1 else " | ".join(tasks),
            "success": bool(succ[ep]) if has_s else None,
            "return": float(ret[ep]) if has_r else None,
            "meta": meta,
        })
    return out
