"""rosbag2 (MCAP or SQLite 3) in and out of LeRobot datasets, with the pure-Python ``rosbags``.

* :func:`export_bag` writes episodes of a dataset as one rosbag2 on the graph's own topics and
  standard messages, so any ROS 2 tool (``ros2 bag play``, Foxglove, PlotJuggler) reads it:

  ==============================================  ===================================  ==========================
  topic                                           type                                 per frame
  ==============================================  ===================================  ==========================
  ``/camera/image_raw`` (``/camera/<cam>/…``)     ``sensor_msgs/msg/Image`` (rgb8)      the camera frame
  ``/joint_states``                               ``sensor_msgs/msg/JointState``       ``observation.state``
  ``/joint_trajectory_controller/joint_trajectory``  ``trajectory_msgs/msg/JointTrajectory``  ``action`` (one point)
  ``/vla/reward``                                 ``geometry_msgs/msg/Vector3Stamped`` reward, done, success
  ``/vla/frame``                                  ``std_msgs/msg/String`` (JSON)       every other feature
                                                                                       (``rl.*``, environment state)
  ``/vla/episode``                                ``std_msgs/msg/String`` (JSON)       ``start`` (task, meta) at the
                                                                                       first frame, ``end`` at the last
  ==============================================  ===================================  ==========================

  Every message of a frame carries the frame's time, ``start_time_ns`` + the episode's offset +
  the frame's LeRobot ``timestamp``; episodes follow each other with ``episode_gap_s`` between.
* :func:`import_bag` turns a bag of image + joint-state (+ optional trajectory / reward /
  markers) topics, written by this project or by anything else, into a LeRobot dataset:

  - **episodes** from ``start`` / ``end`` markers on the episode topic (JSON as above, or the
    plain strings ``start`` / ``end``), or, without markers, from gaps longer than ``gap_s`` in
    the joint states;
  - **resampled** at ``fps``: frame k of an episode is the newest message of every topic at or
    before ``t0 + k / fps`` (zero-order hold; the first frame is the first tick at which every
    required topic has a message);
  - **action** from the trajectory topic (its first point, reordered by joint name), or, when the
    bag has none, the next frame's joint state (what a teleoperated arm was commanded to reach);
  - ``rl.*`` fields from ``/vla/frame`` when present (a bag this project wrote: the round trip is
    exact), else the deploy-mode values the logger writes (μ = action, σ = 0, log-prob NaN);
  - images of another size than the first are resized to it (OpenCV, area interpolation).

No rclpy: it reads and writes the CDR bytes itself (``rosbags``' type store of the distro named in
the configuration), so it runs where ROS 2 is not installed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_rl_ros.core.config import opt
from vla_rl_ros.core.data import schema
from vla_rl_ros.core.topics import CONTROLLER_TOPIC, EPISODE_TOPIC, JOINT_STATES_TOPIC, REWARD_TOPIC

#: extra per-frame fields of an exported bag (std_msgs/String, JSON ``{feature: value}``)
FRAME_TOPIC = "/vla/frame"
IMAGE = "sensor_msgs/msg/Image"
JOINT_STATE = "sensor_msgs/msg/JointState"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
STRING = "std_msgs/msg/String"
VECTOR3_STAMPED = "geometry_msgs/msg/Vector3Stamped"
_NS = 1_000_000_000


def camera_bag_topic(camera: str, index: int) -> str:
    """The graph's camera topics: the first on ``/camera/image_raw``, others ``/camera/<cam>/image_raw``."""
    return "/camera/image_raw" if index == 0 else f"/camera/{camera}/image_raw"


@dataclass(frozen=True)
class BagExportOptions:
    storage: str = opt("mcap", "rosbag2 storage of the bag", choices=("mcap", "sqlite3"))
    start_time_ns: int = opt(1_700_000_000 * _NS, "time of the first frame of the first episode (ns)")
    episode_gap_s: float = opt(2.0, "silence between two episodes in the bag (s; longer than an importer's gap)")
    distro: str = opt("kilted", "ROS 2 distribution whose message definitions go into the bag")


@dataclass(frozen=True)
class BagImportOptions:
    cameras: tuple[str, ...] = opt(("front=/camera/image_raw",), "camera name=topic, one per camera "
                                   "(sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8)")
    joint_states: str = opt("/" + JOINT_STATES_TOPIC, "sensor_msgs/JointState topic: observation.state")
    joint_names: tuple[str, ...] = opt((), "joint order of the state and action (default: the first JointState's)")
    action: str = opt("/" + CONTROLLER_TOPIC, "trajectory_msgs/JointTrajectory topic of the commanded targets "
                      "(its first point); absent from the bag: the next frame's joint state")
    reward: str = opt("/" + REWARD_TOPIC, "geometry_msgs/Vector3Stamped (reward, done, success) topic; optional")
    episode_topic: str = opt("/" + EPISODE_TOPIC, "std_msgs/String start/end markers (JSON or plain); "
                             "absent from the bag: episodes are cut at gaps")
    frame_topic: str = opt(FRAME_TOPIC, "std_msgs/String JSON of the other features (bags this project wrote)")
    fps: float = opt(10.0, "rate of the dataset's frames (Hz); every topic is sampled at it")
    gap_s: float = opt(1.0, "joint-state silence that ends an episode when the bag has no markers (s)")
    task: str = opt("do the task", "instruction of episodes whose start marker names none")
    distro: str = opt("kilted", "ROS 2 distribution of the message definitions used to decode the bag")
    use_header_stamps: bool = opt(True, "time messages by their header stamp (else by the bag's receive time)")
    stamp_tolerance_s: float = opt(0.001, "a message stamped this long after a tick still counts for it (s)")

    def camera_topics(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.cameras:
            name, sep, topic = str(item).partition("=")
            if not sep or not name or not topic or "/" in name:
                raise ValueError(f"camera mapping {item!r}: expected name=topic, e.g. front=/camera/image_raw")
            if name in out:
                raise ValueError(f"camera {name!r} is mapped twice")
            out[name] = topic
        if not out:
            raise ValueError("at least one camera name=topic is needed")
        return out


@dataclass
class ImportReport:
    episodes: int = 0
    frames: int = 0
    source: str = ""  #: "markers" or "gaps"
    action_from: str = ""  #: "topic" or "next state"
    skipped: list[str] = field(default_factory=list)  #: why an episode span was not imported


def _typestore(distro: str):
    from rosbags.typesys import Stores, get_typestore

    key = f"ROS2_{distro.upper()}"
    if key not in Stores.__members__:
        known = ", ".join(s[5:].lower() for s in Stores.__members__ if s.startswith("ROS2_"))
        raise ValueError(f"unknown ROS 2 distribution {distro!r} (known: {known})")
    return get_typestore(Stores[key])


def _stamp(ts, ns: int):
    return ts.types["builtin_interfaces/msg/Time"](sec=int(ns // _NS), nanosec=int(ns % _NS))


def _header(ts, ns: int, frame_id: str = ""):
    return ts.types["std_msgs/msg/Header"](stamp=_stamp(ts, ns), frame_id=frame_id)


def _jsonable(v):
    a = np.asarray(v)
    if a.dtype == np.bool_:
        return a.tolist()
    if a.dtype.kind in "iu":
        return a.astype(np.int64).tolist()
    return a.astype(np.float64).tolist()  # float32 -> float64 is exact; json keeps 17 digits


# ----------------------------------------------------------------------------- export
def export_bag(root: str | Path, bag_path: str | Path, episodes: Sequence[int] | None = None,
               options: BagExportOptions = BagExportOptions(),
               progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``episodes`` (default: all) of the dataset at ``root`` as one rosbag2 at
    ``bag_path`` (a folder, which must not exist). Returns ``{"episodes", "frames", "topics"}``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from vla_rl_ros.core.data.reader import episode_frames, episode_summaries
    from vla_rl_ros.core.data.store import read_info

    root, bag_path = Path(root), Path(bag_path)
    info = read_info(root)
    if info is None:
        raise FileNotFoundError(f"no LeRobot dataset at {str(root)!r} (meta/info.json missing)")
    if bag_path.exists():
        raise FileExistsError(f"{str(bag_path)!r} exists; rosbag2 writes a new folder")
    if options.storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {options.storage!r}")
    ts = _typestore(options.distro)
    feats = {k: v for k, v in info["features"].items() if k not in schema.LEROBOT_DEFAULT_KEYS}
    cams = [k for k in feats if feats[k]["dtype"] in ("image", "video")]
    if schema.STATE not in feats:
        raise ValueError(f"dataset at {str(root)!r} has no {schema.STATE!r}; nothing to put on joint_states")
    joint_names = [str(n) for n in (feats[schema.STATE].get("names") or [])] or \
        [f"joint{i}" for i in range(int(feats[schema.STATE]["shape"][0]))]
    reward_keys = [k for k in (schema.REWARD, schema.DONE, schema.SUCCESS) if k in feats]
    extra_keys = [k for k in feats if k not in cams and k not in (schema.STATE, schema.ACTION, *reward_keys)]
    rows = episode_summaries(root)
    eps = list(range(len(rows))) if episodes is None else [int(e) for e in episodes]
    fps = float(info["fps"])

    storage = StoragePlugin.MCAP if options.storage == "mcap" else StoragePlugin.SQLITE3
    Img, JS = ts.types[IMAGE], ts.types[JOINT_STATE]
    JT, JTP = ts.types[TRAJECTORY], ts.types["trajectory_msgs/msg/JointTrajectoryPoint"]
    Dur, Str = ts.types["builtin_interfaces/msg/Duration"], ts.types[STRING]
    V3S, V3 = ts.types[VECTOR3_STAMPED], ts.types["geometry_msgs/msg/Vector3"]
    empty = np.zeros(0, np.float64)
    period_ns = int(round(_NS / fps))
    frames_total = 0
    with Writer(bag_path, version=9, storage_plugin=storage) as w:
        conn = {}

        def add(topic, msgtype):
            conn[topic] = w.add_connection(topic, msgtype, typestore=ts)

        for i, k in enumerate(cams):
            add(camera_bag_topic(k[len(schema.IMAGE_PREFIX):], i), IMAGE)
        add("/" + JOINT_STATES_TOPIC, JOINT_STATE)
        if schema.ACTION in feats:
            add("/" + CONTROLLER_TOPIC, TRAJECTORY)
        if reward_keys:
            add("/" + REWARD_TOPIC, VECTOR3_STAMPED)
        if extra_keys:
            add(FRAME_TOPIC, STRING)
        add("/" + EPISODE_TOPIC, STRING)

        def put(topic, msg, msgtype, t):
            w.write(conn[topic], t, bytes(ts.serialize_cdr(msg, msgtype)))

        t_ep = int(options.start_time_ns)
        for n_done, ep in enumerate(eps):
            fr = episode_frames(root, ep)
            n = len(fr[schema.STATE])
            # frame k at k / fps exactly (LeRobot's float32 timestamp column is off by up to ~1 µs)
            stamps = [t_ep + int(round(int(k) * _NS / fps)) for k in fr["frame_index"]]
            marker = {"event": "start", "episode": ep, "task": fr["task"], "meta": rows[ep]["meta"], "fps": fps,
                      "names": {k: feats[k].get("names") for k in extra_keys}}
            put("/" + EPISODE_TOPIC, Str(data=json.dumps(marker)), STRING, stamps[0])
            for i in range(n):
                t = stamps[i]
                for ci, k in enumerate(cams):
                    im = np.ascontiguousarray(fr[k][i], dtype=np.uint8)
                    h, wd = im.shape[:2]
                    put(camera_bag_topic(k[len(schema.IMAGE_PREFIX):], ci),
                        Img(header=_header(ts, t, k[len(schema.IMAGE_PREFIX):]), height=h, width=wd,
                            encoding="rgb8", is_bigendian=0, step=wd * 3, data=im.reshape(-1)), IMAGE, t)
                put("/" + JOINT_STATES_TOPIC,
                    JS(header=_header(ts, t), name=joint_names, position=fr[schema.STATE][i].astype(np.float64),
                       velocity=empty, effort=empty), JOINT_STATE, t)
                if schema.ACTION in feats:
                    pt = JTP(positions=fr[schema.ACTION][i].astype(np.float64), velocities=empty,
                             accelerations=empty, effort=empty, time_from_start=Dur(sec=0, nanosec=period_ns))
                    put("/" + CONTROLLER_TOPIC, JT(header=_header(ts, t), joint_names=joint_names, points=[pt]),
                        TRAJECTORY, t)
                if reward_keys:
                    vals = [float(fr[k][i]) if k in fr else 0.0 for k in (schema.REWARD, schema.DONE, schema.SUCCESS)]
                    put("/" + REWARD_TOPIC, V3S(header=_header(ts, t), vector=V3(x=vals[0], y=vals[1], z=vals[2])),
                        VECTOR3_STAMPED, t)
                if extra_keys:
                    put(FRAME_TOPIC, Str(data=json.dumps({k: _jsonable(fr[k][i]) for k in extra_keys})), STRING, t)
            success = bool(np.any(fr[schema.SUCCESS])) if schema.SUCCESS in fr else None
            put("/" + EPISODE_TOPIC, Str(data=json.dumps({"event": "end", "episode": ep, "success": success})),
                STRING, stamps[-1])
            frames_total += n
            t_ep = stamps[-1] + int(round(options.episode_gap_s * _NS))
            if progress:
                progress(n_done + 1, len(eps))
    return {"episodes": len(eps), "frames": frames_total, "topics": sorted(conn)}


# ----------------------------------------------------------------------------- import
class _Stream:
    """One topic's messages, sorted by time: ``times`` (ns, int64) and the decoded ``values``."""

    def __init__(self):
        self.times: list[int] = []
        self.values: list = []

    def finish(self) -> _Stream:
        order = np.argsort(np.asarray(self.times, np.int64), kind="stable")
        self.times = np.asarray(self.times, np.int64)[order]
        self.values = [self.values[i] for i in order]
        return self

    def at(self, ticks: np.ndarray) -> np.ndarray:
        """Index of the newest message at or before each tick (-1: none yet)."""
        return np.searchsorted(self.times, ticks, side="right") - 1


def _msg_time(msg, bag_t: int, use_header: bool) -> int:
    h = getattr(msg, "header", None)
    if use_header and h is not None:
        t = int(h.stamp.sec) * _NS + int(h.stamp.nanosec)
        if t > 0:
            return t
    return int(bag_t)


def _image_rgb(msg) -> np.ndarray:
    import cv2

    h, w, enc = int(msg.height), int(msg.width), str(msg.encoding).lower()
    data = np.asarray(msg.data, np.uint8)
    chans = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
    if enc not in chans:
        raise ValueError(f"image encoding {msg.encoding!r} is not supported (rgb8, bgr8, rgba8, bgra8, mono8)")
    c = chans[enc]
    step = int(msg.step) or w * c
    if data.size < h * step:
        raise ValueError(f"image of {h}x{w} {enc} with step {step} needs {h * step} bytes, got {data.size}")
    img = data[: h * step].reshape(h, step)[:, : w * c].reshape(h, w, c)
    if enc == "rgb8":
        return img.copy()
    if enc == "bgr8":
        return img[..., ::-1].copy()
    if enc == "rgba8":
        return img[..., :3].copy()
    if enc == "bgra8":
        return img[..., 2::-1].copy()
    return cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2RGB)


def _marker(data: str) -> dict:
    s = str(data).strip()
    try:
        ev = json.loads(s)
    except ValueError:
        ev = None
    if isinstance(ev, dict):
        return ev
    return {"event": s.lower()}


def read_bag_streams(bag_path: str | Path, opts: BagImportOptions) -> tuple[dict[str, _Stream], list[str]]:
    """Decode the topics ``opts`` names (those present) from a bag; returns ``(streams, all topics)``."""
    from rosbags.highlevel import AnyReader

    bag_path = Path(bag_path)
    if not bag_path.exists():
        raise FileNotFoundError(f"no bag at {str(bag_path)!r}")
    ts = _typestore(opts.distro)
    cams = opts.camera_topics()
    wanted = {opts.joint_states: "state", opts.action: "action", opts.reward: "reward",
              opts.episode_topic: "episode", opts.frame_topic: "frame"}
    for name, topic in cams.items():
        wanted[topic] = "camera:" + name
    streams: dict[str, _Stream] = {}
    with AnyReader([bag_path], default_typestore=ts) as reader:
        topics = sorted({c.topic for c in reader.connections})
        conns = [c for c in reader.connections if c.topic in wanted]
        for c, bag_t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, c.msgtype)
            role = wanted[c.topic]
            s = streams.setdefault(role, _Stream())
            s.times.append(_msg_time(msg, bag_t, opts.use_header_stamps))
            s.values.append((c.msgtype, msg))
    return {k: s.finish() for k, s in streams.items()}, topics


def _episode_spans(streams: dict[str, _Stream], opts: BagImportOptions, report: ImportReport
                   ) -> list[tuple[int, int, dict]]:
    """``(t_start, t_end, start_marker)`` per episode, from markers or from gaps."""
    ev = streams.get("episode")
    spans: list[tuple[int, int, dict]] = []
    if ev is not None and len(ev.times):
        report.source = "markers"
        open_t, open_ev = None, {}
        for t, (_, msg) in zip(ev.times, ev.values):
            m = _marker(msg.data)
            kind = str(m.get("event", "")).lower()
            if kind == "start":
                if open_t is not None:
                    report.skipped.append(f"episode started at {open_t} ns has no end marker before the next start")
                open_t, open_ev = int(t), m
            elif kind in ("end", "stop") and open_t is not None:
                spans.append((open_t, int(t), {**open_ev, "end": m}))
                open_t = None
            elif kind == "discard":
                if open_t is not None:
                    report.skipped.append(f"episode started at {open_t} ns was discarded by a marker")
                open_t = None
        if open_t is not None:
            report.skipped.append(f"episode started at {open_t} ns has no end marker (not imported)")
        return spans
    report.source = "gaps"
    t = streams["state"].times
    if len(t) == 0:
        return spans
    cuts = np.nonzero(np.diff(t) > int(opts.gap_s * _NS))[0]
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(t) - 1]])
    return [(int(t[a]), int(t[b]), {}) for a, b in zip(starts, ends)]


def _marker_names(ev: _Stream | None) -> dict:
    """Feature names an exported bag's first start marker records (``{}`` otherwise)."""
    for _, msg in (ev.values if ev is not None else []):
        m = _marker(msg.data)
        if m.get("event") == "start":
            return dict(m.get("names") or {})
    return {}


def _reorder(names: Sequence[str], positions, order: list[str], what: str) -> np.ndarray:
    pos = np.asarray(positions, np.float64)
    if not names:
        if pos.size != len(order):
            raise ValueError(f"{what} has {pos.size} positions and no joint names; expected {len(order)}")
        return pos
    idx = {str(n): i for i, n in enumerate(names)}
    missing = [n for n in order if n not in idx]
    if missing:
        raise ValueError(f"{what} lacks joints {missing} (it has {list(names)})")
    return pos[[idx[n] for n in order]]


def import_bag(bag_path: str | Path, out_root: str | Path, opts: BagImportOptions = BagImportOptions(),
               progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Convert the bag at ``bag_path`` into a LeRobot dataset at ``out_root`` (created, or
    appended to when its features match). See the module doc for the mapping."""
    import cv2

    from vla_rl_ros.core.data.writer import EpisodeWriter

    if opts.fps <= 0 or not math.isfinite(opts.fps):
        raise ValueError(f"fps must be positive, got {opts.fps}")
    cams = opts.camera_topics()
    streams, topics = read_bag_streams(bag_path, opts)
    missing = [t for t, role in [(opts.joint_states, "state")] + [(t, "camera:" + c) for c, t in cams.items()]
               if role not in streams]
    if missing:
        raise ValueError(f"bag {str(bag_path)!r} has no messages on {missing}; its topics: {topics}")
    report = ImportReport(action_from="topic" if "action" in streams else "next state")
    state_s = streams["state"]
    first_js = state_s.values[0][1]
    joint_names = [str(n) for n in (opts.joint_names or first_js.name)]
    if not joint_names:
        joint_names = [f"joint{i}" for i in range(len(first_js.position))]
    first_img = {c: _image_rgb(streams["camera:" + c].values[0][1]) for c in cams}
    shape = first_img[next(iter(cams))].shape[:2]

    extra_feats: dict[str, dict] = {}
    env_names: list[str] = []
    frame_s = streams.get("frame")
    if frame_s is not None and len(frame_s.times):
        sample = json.loads(frame_s.values[0][1].data)
        if schema.ENV_STATE in sample:
            names = _marker_names(streams.get("episode")).get(schema.ENV_STATE)
            env_names = list(names or [f"env{i}" for i in range(len(sample[schema.ENV_STATE]))])
    features = schema.make_features(joint_names, cameras=list(cams), image_shape=shape,
                                    environment_state=env_names)
    extra_feats = {k: v for k, v in features.items()
                   if k not in (schema.STATE, schema.ACTION, schema.REWARD, schema.DONE, schema.SUCCESS)
                   and v["dtype"] not in ("image", "video")}
    spans = _episode_spans(streams, opts, report)
    period = _NS / opts.fps
    dof = len(joint_names)
    with EpisodeWriter(out_root, fps=int(round(opts.fps)), features=features, mode="thread") as writer:
        for n_done, (t0, t1, start_ev) in enumerate(spans):
            tol = int(opts.stamp_tolerance_s * _NS)
            # the grid starts once every required topic has spoken in this span (a message up to
            # gap_s before the span's start still belongs to it, a previous episode's does not)
            need = ["state"] + ["camera:" + c for c in cams]
            firsts = []
            for r in need:
                times = streams[r].times
                i = int(np.searchsorted(times, t0 - int(opts.gap_s * _NS), side="left"))
                firsts.append(int(times[i]) if i < len(times) else None)
            if any(f is None or f > t1 + tol for f in firsts):
                report.skipped.append(f"span {t0}..{t1} ns: some required topic has no message in it")
                continue
            t_start = max([t0, *firsts])
            n = int((t1 - t_start + tol) // period) + 1
            ticks = np.asarray([t_start + int(round(k * period)) for k in range(n)], np.int64)
            idx = {role: s.at(ticks + tol) for role, s in streams.items() if role != "episode"}
            states = np.stack([_reorder(state_s.values[i][1].name, state_s.values[i][1].position, joint_names,
                                        "joint state") for i in idx["state"]])
            if "action" in streams:
                act_s = streams["action"]
                acts = []
                for k, i in enumerate(idx["action"]):
                    if i < 0:
                        acts.append(states[k])
                        continue
                    msg = act_s.values[i][1]
                    if not msg.points:
                        raise ValueError(f"trajectory on {opts.action} at {act_s.times[i]} ns has no points")
                    acts.append(_reorder(msg.joint_names, msg.points[0].positions, joint_names, "trajectory"))
                actions = np.stack(acts)
            else:
                actions = np.concatenate([states[1:], states[-1:]], axis=0)
            rew = np.zeros((n, 3), np.float64)
            if "reward" in streams:
                rs = streams["reward"]
                for k, i in enumerate(idx["reward"]):
                    if i >= 0 and rs.times[i] >= ticks[0]:
                        v = rs.values[i][1].vector
                        rew[k] = (v.x, v.y, v.z)
            else:
                rew[-1, 1] = 1.0
                rew[-1, 2] = float(bool((start_ev.get("end") or {}).get("success")))
            extras = [None] * n
            if frame_s is not None and "frame" in idx:
                for k, i in enumerate(idx["frame"]):
                    if i >= 0 and frame_s.times[i] >= ticks[0]:
                        extras[k] = json.loads(frame_s.values[i][1].data)
            frames = []
            for k in range(n):
                fr = {}
                for c in cams:
                    s = streams["camera:" + c]
                    im = _image_rgb(s.values[idx["camera:" + c][k]][1])
                    if im.shape[:2] != shape:
                        im = cv2.resize(im, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
                    fr[schema.image_key(c)] = im
                fr[schema.STATE] = states[k].astype(np.float32)
                fr[schema.ACTION] = actions[k].astype(np.float32)
                fr[schema.REWARD] = np.float32(rew[k, 0])
                fr[schema.DONE] = bool(rew[k, 1] > 0.5)
                fr[schema.SUCCESS] = bool(rew[k, 2] > 0.5)
                ex = extras[k] or {}
                for key, ft in extra_feats.items():
                    if key in ex:
                        fr[key] = np.asarray(ex[key], dtype=ft["dtype"]).reshape(-1 if ft["shape"] != (1,) else ())
                    else:
                        fr[key] = _deploy_default(key, fr, dof)
                frames.append(fr)
            task = str(start_ev.get("task") or start_ev.get("instruction") or opts.task)
            meta = dict(start_ev.get("meta") or {})
            meta["source_bag"] = str(Path(bag_path).resolve())
            meta["bag_start_ns"] = int(ticks[0])
            writer.submit(frames, task=task, meta=meta)
            report.episodes += 1
            report.frames += n
            if progress:
                progress(n_done + 1, len(spans))
        if not writer.close(timeout=None):
            raise RuntimeError(f"the dataset writer did not finish saving into {str(out_root)!r}")
        failed = writer.failed_episodes()
        if failed:
            raise RuntimeError(f"{len(failed)} episodes could not be saved: {failed[0].error}")
    return report


def _deploy_default(key: str, fr: dict, dof: int):
    """What the logger writes for a deploy-mode (unexplored) step, for bags without ``/vla/frame``."""
    if key == schema.ACTION_MEAN:
        return fr[schema.ACTION].copy()
    if key == schema.SIGMA:
        return np.zeros(dof, np.float32)
    if key == schema.LOG_PROB:
        return np.float32(np.nan)
    if key in (schema.CHUNK_ID, schema.CHUNK_INDEX, schema.POLICY_VERSION):
        return np.int64(0)
    raise ValueError(f"no value for feature {key!r} in the bag and no default for it")
