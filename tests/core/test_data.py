"""Dataset layer: schema, EpisodeWriter (round trip, resume, validation, crash safety), reader.

No ROS. Episodes are tiny (a few frames, 8x10 images) so the whole file runs in well under a
minute; the kill -9 tests run a real owner process with the real worker process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lerobot.datasets.lerobot_dataset")

from vla_rl_ros.core.data import schema as S
from vla_rl_ros.core.data.reader import episode_frames, episode_summaries, open_dataset
from vla_rl_ros.core.data.spool import LOCK_FILE, SPOOL_DIR, list_spool
from vla_rl_ros.core.data.store import recover
from vla_rl_ros.core.data.writer import EpisodeWriter, validate_episode

REPO = Path(__file__).resolve().parents[2]
JOINTS = [f"j{i}" for i in range(3)]
H, W = 8, 10
FEATS = S.make_features(JOINTS, cameras=["front"], image_shape=(H, W))
FPS = 10

# An episode generator shared by this file and the owner subprocesses (kept in sync by source).
EPISODE_SRC = textwrap.dedent(
    """
    import numpy as np
    from vla_rl_ros.core.data import schema as S

    def make_episode(n, seed, h=8, w=10, dof=3):
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            out.append({
                S.image_key("front"): rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                S.STATE: rng.normal(size=dof).astype(np.float32),
                S.ACTION: rng.normal(size=dof).astype(np.float32),
                S.ACTION_MEAN: rng.normal(size=dof),            # float64 is accepted (cast)
                S.SIGMA: np.full(dof, 0.1, np.float32),
                S.LOG_PROB: float(rng.normal()),                 # python float scalar
                S.CHUNK_ID: 1_700_000_000_123_456_789 + (i // 4) * 100_000_000,  # ns, > 2**53
                S.CHUNK_INDEX: np.int64(i % 4),                  # numpy scalar
                S.POLICY_VERSION: np.array([seed]),              # 1-element array
                S.REWARD: np.float32(1.0 if i == n - 1 else 0.0),
                S.DONE: i == n - 1,
                S.SUCCESS: bool(seed % 2 == 0 and i == n - 1),
            })
        return out
    """
)
_ns: dict = {}
exec(EPISODE_SRC, _ns)  # noqa: S102
make_episode = _ns["make_episode"]


pytestmark = pytest.mark.usefixtures("private_hf_cache")  # tests/conftest.py


def _expected_columns(frames):
    cols, imgs = validate_episode(frames, "x", FEATS)
    cols.update({k: np.stack(v) for k, v in imgs.items()})
    return cols


def _assert_episode_equal(got: dict, frames, task):
    exp = _expected_columns(frames)
    assert got["task"] == task
    for k, v in exp.items():
        g = np.asarray(got[k])
        assert g.shape == v.shape, (k, g.shape, v.shape)
        if v.dtype.kind == "f":
            np.testing.assert_array_equal(g.astype(np.float32), v, err_msg=k)
        else:
            np.testing.assert_array_equal(g, v, err_msg=k)


def _run_py(code: str, *args, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: PLW1510 (the callers check returncode)
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=str(REPO),
        env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
    )


# ----------------------------------------------------------------------------- schema
def test_schema_names_shapes_dtypes():
    f = S.make_features(["a", "b"], cameras=["front", "wrist"], image_shape=(96, 128))
    assert f["observation.images.front"] == {"dtype": "image", "shape": (96, 128, 3),
                                             "names": ["height", "width", "channels"]}
    assert "observation.images.wrist" in f
    for k in (S.STATE, S.ACTION, S.ACTION_MEAN, S.SIGMA):
        assert f[k]["dtype"] == "float32" and f[k]["shape"] == (2,) and f[k]["names"] == ["a", "b"]
    assert f[S.LOG_PROB]["dtype"] == "float32" and f[S.REWARD]["dtype"] == "float32"
    for k in (S.CHUNK_ID, S.CHUNK_INDEX, S.POLICY_VERSION):
        assert f[k] == {"dtype": "int64", "shape": (1,), "names": None}
    for k in (S.DONE, S.SUCCESS):
        assert f[k] == {"dtype": "bool", "shape": (1,), "names": None}
    assert S.make_features(["a"], use_videos=True)["observation.images.front"]["dtype"] == "video"
    # nothing but the policy's action starts with "action" (lerobot's policy-feature rule)
    assert [k for k in f if k.startswith("action")] == ["action"]
    with pytest.raises(ValueError, match="duplicates"):
        S.make_features(["a", "a"])


# ----------------------------------------------------------------------------- round trip
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """3 episodes written by a thread-mode writer (lerobot imported once in-process)."""
    root = tmp_path_factory.mktemp("rt") / "ds"
    eps = [(make_episode(6, 0), "pick up the red cube"), (make_episode(9, 1), "open the drawer"),
           (make_episode(7, 2), "pick up the red cube")]
    seen = []
    w = EpisodeWriter(root, fps=FPS, features=FEATS, mode="thread", on_saved=seen.append)
    tickets = [w.submit(fr, task, meta={"seed": i}) for i, (fr, task) in enumerate(eps)]
    assert w.close(timeout=120)
    assert w.pending() == 0 and not w.failed_episodes()
    assert [s.ticket for s in seen] == tickets
    assert [s.episode_index for s in w.saved_episodes()] == [0, 1, 2]
    assert [s.frames for s in seen] == [6, 9, 7]
    assert all(s.seconds > 0 and s.latency >= s.seconds * 0.5 for s in seen)
    return root, eps


def test_round_trip_reader(written):
    root, eps = written
    ds = open_dataset(root)
    assert ds.meta.total_episodes == 3 and len(ds) == 6 + 9 + 7
    for i, (frames, task) in enumerate(eps):
        got = episode_frames(ds, i)
        _assert_episode_equal(got, frames, task)
        np.testing.assert_array_equal(got["frame_index"], np.arange(len(frames)))
        assert (got["episode_index"] == i).all()
    # also from a path, restricted keys
    sub = episode_frames(root, 1, keys=[S.STATE, S.REWARD])
    assert set(sub) == {S.STATE, S.REWARD, "task"} and sub[S.STATE].shape == (9, 3)
    # LeRobot's own item access agrees (float image in [0,1], CHW)
    item = ds[6 + 2]  # episode 1, frame 2
    np.testing.assert_array_equal(item[S.STATE].numpy(), eps[1][0][2][S.STATE])
    img = (item[S.image_key("front")].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(img, eps[1][0][2][S.image_key("front")])
    assert item["task"] == "open the drawer"
    assert int(item[S.CHUNK_ID]) == eps[1][0][2][S.CHUNK_ID]  # int64 ns stamps survive exactly
    with pytest.raises(IndexError):
        episode_frames(ds, 3)


def test_summaries(written):
    root, eps = written
    rows = episode_summaries(root)
    assert [r["episode_index"] for r in rows] == [0, 1, 2]
    assert [r["length"] for r in rows] == [6, 9, 7]
    assert [r["task"] for r in rows] == [t for _, t in eps]
    assert [r["success"] for r in rows] == [True, False, True]
    assert [r["return"] for r in rows] == [1.0, 1.0, 1.0]
    assert [r["meta"] for r in rows] == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
    assert not (root / SPOOL_DIR).exists()


def test_round_trip_fresh_process(written, killed):
    """Values, tasks and counts as seen by LeRobotDataset in a fresh process (see ``killed``)."""
    _, states = killed
    state = states[written[0]]
    assert state.get("round_trip") == "OK", state
    assert state["total"] == 3 and state["frames"] == 22
    assert state["eps"] == [[0, 6, "pick up the red cube"], [1, 9, "open the drawer"], [2, 7, "pick up the red cube"]]


# ----------------------------------------------------------------------------- resume
def test_resume_appends(written, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(written[0], root)
    w = EpisodeWriter(root, fps=FPS, mode="thread")  # features taken from the dataset
    w.submit(make_episode(5, 7), "close the drawer")
    assert w.close(timeout=120)
    assert [s.episode_index for s in w.saved_episodes()] == [3]
    ds = open_dataset(root)
    assert ds.meta.total_episodes == 4 and len(ds) == 22 + 5
    _assert_episode_equal(episode_frames(ds, 3), make_episode(5, 7), "close the drawer")
    _assert_episode_equal(episode_frames(ds, 1), *written[1][1])  # old episodes intact
    assert int(episode_frames(ds, 3)["index"][0]) == 22
    assert [r["task"] for r in episode_summaries(root)][-1] == "close the drawer"

    with pytest.raises(ValueError, match="different features"):
        EpisodeWriter(root, fps=FPS, features=S.make_features(["a", "b"], ["front"], (H, W)), mode="thread")
    with pytest.raises(ValueError, match="fps"):
        EpisodeWriter(root, fps=FPS + 1, mode="thread")


def test_video_features_round_trip(tmp_path):
    """use_videos: mp4 (AV1) per episode; episode_frames decodes it (lossy) with PyAV."""
    with pytest.raises(ValueError, match="at least 32"):
        S.make_features(JOINTS, ["front"], (16, 16), use_videos=True)  # SVT-AV1 would SIGFPE
    feats = S.make_features(JOINTS, ["front"], (32, 32), use_videos=True)
    y, x = np.mgrid[0:32, 0:32]
    eps = []
    for s in range(2):
        fr = make_episode(8 + s, s, h=32, w=32)
        for i, f in enumerate(fr):  # smooth images: what a codec is made for
            f[S.image_key("front")] = np.stack([x * 4 + i, y * 4, (x + y) * 2 + 20 * s], -1).astype(np.uint8)
        eps.append(fr)
    w = EpisodeWriter(tmp_path / "ds", fps=FPS, features=feats, mode="thread")
    for s, fr in enumerate(eps):
        w.submit(fr, f"video task {s}")
    assert w.close(timeout=120), w.failed_episodes()
    assert sorted(p.name for p in (tmp_path / "ds/videos/observation.images.front/chunk-000").iterdir()) == [
        "file-000.mp4", "file-001.mp4"]
    for s, fr in enumerate(eps):
        got = episode_frames(tmp_path / "ds", s)
        exp = np.stack([f[S.image_key("front")] for f in fr])
        assert got[S.image_key("front")].shape == exp.shape
        assert np.abs(got[S.image_key("front")].astype(int) - exp).mean() < 12
        np.testing.assert_array_equal(got[S.ACTION], np.stack([f[S.ACTION] for f in fr]))
    assert open_dataset(tmp_path / "ds").meta.total_episodes == 2


# ----------------------------------------------------------------------------- validation
def _bad(mutate, n=4):
    fr = make_episode(n, 3)
    mutate(fr)
    return fr


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda f: f[1].__setitem__(S.image_key("front"), np.zeros((H, W + 1, 3), np.uint8)), "observation.images.front"),
        (lambda f: f[0].__setitem__(S.image_key("front"), np.zeros((H, W, 3), np.float32)), "observation.images.front"),
        (lambda f: f[2][S.STATE].__setitem__(1, np.nan), "observation.state"),
        (lambda f: f[3][S.ACTION].__setitem__(0, np.inf), "action"),
        (lambda f: f[0].__setitem__(S.ACTION, np.zeros(4, np.float32)), "action"),
        (lambda f: f[1].__setitem__(S.SIGMA, np.array(["a", "b", "c"])), "rl.sigma"),
        (lambda f: f[2].__setitem__(S.CHUNK_ID, 1.5), "rl.chunk_id"),
        (lambda f: f[0].__setitem__(S.REWARD, np.zeros(2, np.float32)), "next.reward"),
        (lambda f: f[1].__setitem__(S.DONE, "yes"), "next.done"),
        (lambda f: f[1].pop(S.LOG_PROB), "rl.log_prob"),
        (lambda f: f[0].__setitem__("rl.typo", 1.0), "rl.typo"),
    ],
)
def test_validation_errors(mutate, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        validate_episode(_bad(mutate), "task", FEATS)


def test_validation_empty_and_task():
    with pytest.raises(ValueError, match="empty episode"):
        validate_episode([], "task", FEATS)
    for task in ("", "   ", None):
        with pytest.raises(ValueError, match="task"):
            validate_episode(make_episode(2, 0), task, FEATS)
    # NaN log-prob is allowed (means "not available", e.g. sigma == 0)
    fr = make_episode(2, 0)
    fr[0][S.LOG_PROB] = float("nan")
    validate_episode(fr, "task", FEATS)


def test_invalid_submit_leaves_dataset_untouched(written, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(written[0], root)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != LOCK_FILE)
    w = EpisodeWriter(root, fps=FPS, mode="thread")
    with pytest.raises(ValueError, match="observation.state"):
        w.submit(_bad(lambda f: f[0][S.STATE].__setitem__(0, np.nan)), "task")
    with pytest.raises(ValueError, match="empty"):
        w.submit([], "task")
    with pytest.raises(ValueError, match="meta"):
        w.submit(make_episode(2, 0), "task", meta={"bad": object()})
    assert w.pending() == 0
    assert w.close(timeout=60)
    after = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != LOCK_FILE)
    assert after == before
    assert open_dataset(root).meta.total_episodes == 3
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(make_episode(2, 0), "task")


def test_unwritable_root(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(ValueError, match="a_file"):
        EpisodeWriter(f / "ds", fps=FPS, features=FEATS, mode="thread")
    with pytest.raises(ValueError, match="a_file"):
        EpisodeWriter(f, fps=FPS, features=FEATS, mode="thread")
    with pytest.raises((PermissionError, ValueError), match="vla_rl_ros_test"):
        EpisodeWriter("/sys/vla_rl_ros_test/ds", fps=FPS, features=FEATS, mode="thread")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(PermissionError, match="ro"):
            EpisodeWriter(ro / "ds", fps=FPS, features=FEATS, mode="thread")
    with pytest.raises(ValueError, match="features are required"):
        EpisodeWriter(tmp_path / "new", fps=FPS, mode="thread")


def test_one_writer_per_root(written, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(written[0], root)
    w = EpisodeWriter(root, fps=FPS, mode="thread")
    with pytest.raises(RuntimeError, match="locked"):
        EpisodeWriter(root, fps=FPS, mode="thread", lock_timeout=0.2)
    w.close(timeout=30)


# ----------------------------------------------------------------------------- crash safety
OWNER_SRC = EPISODE_SRC + textwrap.dedent(
    """
    import sys, time
    from vla_rl_ros.core.data import EpisodeWriter, make_features
    root, n_eps, then = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    feats = make_features([f"j{i}" for i in range(3)], ["front"], (8, 10))
    import threading
    _lock = threading.Lock()
    def say(msg):  # whole lines only: the saved callback runs on another thread
        with _lock:
            sys.stdout.write(msg + "\\n"); sys.stdout.flush()
    def saved(s):
        say(f"SAVED {s.episode_index} {s.frames} {s.task}")
    w = EpisodeWriter(root, fps=10, features=feats, on_saved=saved)   # mode="process"
    say(f"WORKER {w._proc.pid}")
    for k in range(n_eps):
        w.submit(make_episode(20 + k, k), task=f"task {k}")
    say("SUBMITTED")
    if then == "record":          # an episode being recorded, never submitted
        w.wait()
        frames = []
        say("RECORDING")
        while True:
            frames.append(make_episode(1, 99)[0]); time.sleep(0.01)
    time.sleep(600)
    """
)

CHECK_SRC = EPISODE_SRC + textwrap.dedent(
    """
    import sys, json
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    def check_round_trip(ds):  # the 3 episodes of the ``written`` fixture, item by item
        seeds, lengths = [0, 1, 2], [6, 9, 7]
        tasks = ["pick up the red cube", "open the drawer", "pick up the red cube"]
        idx = 0
        for s, n, t in zip(seeds, lengths, tasks):
            ep = make_episode(n, s)
            for i in range(n):
                it = ds[idx]; idx += 1
                assert it["task"] == t and int(it["episode_index"]) == s
                np.testing.assert_array_equal(it["action"].numpy(), ep[i]["action"])
                np.testing.assert_array_equal(it["observation.state"].numpy(), ep[i]["observation.state"])
                np.testing.assert_allclose(it["rl.action_mean"].numpy(), ep[i]["rl.action_mean"], rtol=1e-6)
                img = (it["observation.images.front"].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)
                np.testing.assert_array_equal(img, ep[i]["observation.images.front"])
                assert abs(float(it["rl.log_prob"]) - ep[i]["rl.log_prob"]) < 1e-6
                assert int(it["rl.chunk_id"]) == ep[i]["rl.chunk_id"]
                assert int(it["rl.chunk_index"]) == ep[i]["rl.chunk_index"]
                assert int(it["rl.policy_version"]) == s
                assert float(it["next.reward"]) == float(ep[i]["next.reward"])
                assert bool(it["next.done"]) == ep[i]["next.done"]
                assert bool(it["next.success"]) == ep[i]["next.success"]
        return "OK"

    out = {}
    for arg in sys.argv[1:]:
        rt, root = arg.startswith("rt:"), arg.removeprefix("rt:")
        try:
            ds = LeRobotDataset("x/y", root=root)
            eps = [[int(r["episode_index"]), int(r["length"]), r["tasks"][0]] for r in ds.meta.episodes
                   if r["episode_index"] < ds.meta.total_episodes]
            last = ds[len(ds) - 1]  # decode a row (image included)
            out[root] = {"total": ds.meta.total_episodes, "frames": len(ds), "eps": eps}
            if rt:
                out[root]["round_trip"] = check_round_trip(ds)
        except Exception as e:
            out[root] = {"error": repr(e)}
    print("LOADED", json.dumps(out))
    """
)


def _load_fresh(*roots) -> dict:
    """Load each root with LeRobotDataset in one fresh process ("rt:<root>": also check values)."""
    r = _run_py(CHECK_SRC, *roots)
    assert r.returncode == 0, r.stderr[-3000:]
    states = json.loads(r.stdout.split("LOADED", 1)[1])
    return {Path(k): v for k, v in states.items()}


class _Owner:
    """An owner process (own process group) whose stdout lines are collected by a thread."""

    def __init__(self, root, n_eps, then="wait", env=None):
        import threading

        self.root = root
        self.lines: list[str] = []
        self.p = subprocess.Popen(
            [sys.executable, "-u", "-c", OWNER_SRC, str(root), str(n_eps), then],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
            env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})), start_new_session=True,
        )
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.strip())

    def saved(self):
        return [(int(a), int(b), c) for _, a, b, c in
                (ln.split(maxsplit=3) for ln in list(self.lines) if ln.startswith("SAVED"))]

    def wait_for(self, pred, timeout=90):
        deadline = time.monotonic() + timeout
        while not pred(self):
            if time.monotonic() > deadline or self.p.poll() is not None:
                err = self.p.stderr.read()[-3000:] if self.p.poll() is not None else "(running)"
                raise AssertionError(f"owner lines {self.lines}; stderr: {err}")
            time.sleep(0.02)

    def worker_pid(self):
        return int(next(ln.split()[1] for ln in self.lines if ln.startswith("WORKER")))

    def kill(self, group=True):
        with __import__("contextlib").suppress(ProcessLookupError):
            if group:
                os.killpg(self.p.pid, signal.SIGKILL)
            else:
                os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(10)
        self._t.join(5)


def _dead(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # zombie (no reaper in containers)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, written):
    """Three owner processes killed at different moments, run side by side (saves time).

    group: kill -9 of owner + worker while episode 2 of 4 is being saved.
    owner: kill -9 of the owner only, after 1 of 4 saved (the worker is orphaned).
    record: kill -9 of the group while a 3rd episode is being recorded (never submitted).
    """
    import threading

    base = tmp_path_factory.mktemp("kill")
    owners = {"group": _Owner(base / "group", 4), "owner": _Owner(base / "owner", 4),
              "record": _Owner(base / "record", 2, then="record")}
    plans = {
        "group": (lambda o: len(o.saved()) >= 2, 0.15, True),
        "owner": (lambda o: len(o.saved()) >= 1, 0.0, False),
        "record": (lambda o: "RECORDING" in o.lines, 0.1, True),
    }
    errors = []

    def drive(name):
        o = owners[name]
        pred, delay, group = plans[name]
        try:
            o.wait_for(pred)
            time.sleep(delay)
        except AssertionError as e:
            errors.append(e)
        finally:
            o.kill(group)

    threads = [threading.Thread(target=drive, args=(n,)) for n in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    # right after the kills (the orphaned worker may still be committing): all load, fresh process
    # (the round-trip dataset is checked in the same fresh process, to pay lerobot's import once)
    states = _load_fresh(*(o.root for o in owners.values()), f"rt:{written[0]}")
    yield owners, states
    for o in owners.values():
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(o.p.pid, signal.SIGKILL)


def _assert_has_saved(state, saved):
    assert "error" not in state, state
    for ep in saved:
        assert list(ep) in state["eps"], (ep, state)


def test_kill9_process_group_mid_save_then_replay(killed):
    owners, states = killed
    o = owners["group"]
    state = states[o.root]
    assert state["total"] >= len(o.saved()) >= 2
    _assert_has_saved(state, o.saved())
    # the next writer replays what was spooled but not saved: all 4 episodes, no duplicate
    w = EpisodeWriter(o.root, fps=FPS, mode="thread")
    assert w.close(timeout=120)
    assert all(s.recovered for s in w.saved_episodes())
    # the spool replays what was not committed; a commit the kill interrupted is rolled forward
    # by the store instead (not listed as replayed): together, every episode exactly once (below)
    replayed = len(w.saved_episodes())
    assert replayed <= 4 - state["total"], (replayed, state["total"])
    ds = open_dataset(o.root)
    rows = episode_summaries(o.root)
    assert [r["task"] for r in rows] == [f"task {k}" for k in range(4)]
    assert [r["length"] for r in rows] == [20, 21, 22, 23]
    assert len(ds) == 86
    _assert_episode_equal(episode_frames(ds, 3), make_episode(23, 3), "task 3")
    assert not list_spool(o.root)


def test_kill9_owner_only_mid_save(killed):
    """The orphaned worker finishes what it was given, then releases the root."""
    owners, states = killed
    o = owners["owner"]
    _assert_has_saved(states[o.root], o.saved())
    w = EpisodeWriter(o.root, fps=FPS, mode="thread", lock_timeout=90)  # waits for the orphan
    assert w.close(timeout=60)
    assert _dead(o.worker_pid())
    assert [r["task"] for r in episode_summaries(o.root)] == [f"task {k}" for k in range(4)]
    assert not list_spool(o.root)


def test_kill9_mid_episode_before_submit(killed):
    owners, states = killed
    o = owners["record"]
    assert len(o.saved()) == 2
    state = states[o.root]
    assert state["total"] == 2 and state["frames"] == 41
    _assert_has_saved(state, o.saved())
    assert not list_spool(o.root)


STORE_SRC = EPISODE_SRC + textwrap.dedent(
    """
    import sys
    from vla_rl_ros.core.data.schema import make_features
    from vla_rl_ros.core.data.writer import validate_episode, _Spec
    from vla_rl_ros.core.data.spool import write_spool_entry
    from vla_rl_ros.core.data.store import DatasetStore

    def save_spooled(root, seeds, durable=False):
        feats = make_features([f"j{i}" for i in range(3)], ["front"], (8, 10))
        cfg = {"repo_id": "local/ds", "fps": 10, "features": feats, "robot_type": "panda"}
        st = DatasetStore(root, "local/ds", 10, feats, "panda", durable=durable)
        for s in seeds:
            cols, imgs = validate_episode(make_episode(5 + s, s), f"task {s}", feats)
            e = write_spool_entry(root, s, cols, imgs, {"task": f"task {s}", "frames": 5 + s, "meta": {},
                                  "keys": _Spec(feats).keys, "dataset": cfg}, durable=durable)
            st.save(e)

    if __name__ == "__main__":
        save_spooled(sys.argv[1], [int(s) for s in sys.argv[2].split(",")])
    """
)

class _SimulatedKill(BaseException):
    """Raised at a commit crash point: unwinds without any cleanup, like SIGKILL."""


@pytest.fixture(scope="module")
def base_two_episodes(tmp_path_factory):
    base = tmp_path_factory.mktemp("crash") / "base"
    ns: dict = {"__name__": "store_src"}
    exec(STORE_SRC, ns)  # noqa: S102  (in-process: lerobot is already imported here)
    ns["save_spooled"](base, [0, 1])
    return base, ns["save_spooled"]


def _check_crashed_root(root, committed_expected=None):
    ds = open_dataset(root)  # loads mid-commit: the new episode is visible only once info.json moved
    n = ds.meta.total_episodes
    assert (n, len(ds)) in ((2, 11), (3, 18))
    ds[len(ds) - 1]
    assert [e["length"] for e in episode_summaries(root)] == [5, 6, 7][:n]
    report = recover(root)
    assert report["problems"] == []
    if committed_expected is not None:
        assert (report["rolled_forward"] == 2) == committed_expected
        assert len(report["replayed"]) == (0 if committed_expected else 1)
    rows = episode_summaries(root)
    assert [r["task"] for r in rows] == ["task 0", "task 1", "task 2"]  # exactly once
    _assert_episode_equal(episode_frames(root, 2), make_episode(7, 2), "task 2")
    assert len(open_dataset(root)) == 18
    assert not (root / ".vla_staging").exists() and not list_spool(root)


def test_sigkill_inside_commit_recovers(base_two_episodes, tmp_path):
    """A real SIGKILL after the first file of the commit moved (data file visible, info not)."""
    import shutil

    base, _ = base_two_episodes
    root = tmp_path / "ds"
    shutil.copytree(base, root)
    p = subprocess.run([sys.executable, "-c", STORE_SRC, str(root), "2"], cwd=str(REPO), capture_output=True, check=False,
                       text=True, env=dict(os.environ, PYTHONPATH=str(REPO), VLA_RL_ROS_CRASH_AT="after_move_0"),
                       timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert (root / ".vla_staging" / "COMMIT.json").exists()
    _check_crashed_root(root, committed_expected=True)


def test_crash_at_every_commit_step_recovers(base_two_episodes, tmp_path, monkeypatch):
    """Interrupt the commit at every step: the root always loads; recover() completes it."""
    import shutil

    from vla_rl_ros.core.data import store

    base, save_spooled = base_two_episodes
    points = ["before_manifest", "after_manifest"] + [f"after_move_{i}" for i in range(12)]
    hit = []
    for point in points:
        def crash(name, episode=None, point=point):
            if name == point:
                raise _SimulatedKill(point)

        monkeypatch.setattr(store, "_crash_point", crash)
        root = tmp_path / point
        shutil.copytree(base, root)
        try:
            save_spooled(root, [2])
        except _SimulatedKill:
            hit.append(point)
        else:  # past the last move: nothing left to interrupt
            shutil.rmtree(root)
            break
        monkeypatch.setattr(store, "_crash_point", lambda name, episode=None: None)
        _check_crashed_root(root, committed_expected=point != "before_manifest")
    assert len(hit) >= 6, hit  # data, episodes, side json, tasks, stats, info


def test_iter_episode_frames_equals_per_episode_reads(written):
    from vla_rl_ros.core.data.reader import iter_episode_frames

    root, _ = written
    total = len(episode_summaries(root))
    got = list(iter_episode_frames(root))
    assert [e for e, _ in got] == list(range(total))
    for e, d in got:
        ref = episode_frames(root, e)
        assert d["task"] == ref["task"] and set(d) == set(ref)
        for k in ref:
            if k != "task":
                np.testing.assert_array_equal(d[k], ref[k])
    sub = list(iter_episode_frames(root, keys=[S.STATE], episodes=[total - 1]))
    assert len(sub) == 1 and set(sub[0][1]) == {S.STATE, "task"}
    with pytest.raises(IndexError):
        list(iter_episode_frames(root, episodes=[total]))


def test_episode_selection_lists_and_ranges():
    from vla_rl_ros.core.data.reader import parse_episode_list

    assert parse_episode_list("", 3) == [0, 1, 2]
    assert parse_episode_list("0:250", 1000) == list(range(250))
    assert parse_episode_list("3,0,3", 5) == [3, 0]  # replay order kept, no repeats
    assert parse_episode_list(":2,4", 5) == [0, 1, 4] and parse_episode_list("3:", 5) == [3, 4]
    for bad, msg in (("5", "not in dataset"), ("0:9", "outside"), ("3:1", "empty"), ("a", "not an index")):
        with pytest.raises(ValueError, match=msg):
            parse_episode_list(bad, 5)


@pytest.mark.parametrize("point", ["before_manifest", "after_manifest"])
def test_kill9_paused_inside_the_commit(tmp_path, point):
    """kill -9 of owner + worker while the worker is provably inside episode 2's commit (paused
    there by the store's test hook): right after, lerobot reads episodes 0 and 1 with their exact
    lengths, and episode 2 only if its commit point (the redo log) was written; the next writer
    brings every submitted episode in exactly once with its exact length."""
    root, flag = tmp_path / "ds", tmp_path / "paused"
    o = _Owner(root, 4, env={"VLA_RL_ROS_PAUSE_AT": f"{point}@2", "VLA_RL_ROS_PAUSE_FILE": str(flag)})
    try:
        o.wait_for(lambda _: flag.exists(), timeout=120)
        assert json.loads(flag.read_text())["episode"] == 2
    finally:
        o.kill(group=True)
    assert [s[:2] for s in o.saved()] == [(0, 20), (1, 21)]
    state = _load_fresh(root)[root]
    assert "error" not in state, state
    committed = point == "after_manifest"
    # lerobot sees the root as the kill left it: ep 2 absent (its data may sit in staging only)
    assert [e[:2] for e in state["eps"]] == [[0, 20], [1, 21]], state
    report = recover(root, replay=False)
    assert (report["rolled_forward"] == 2) == committed, report
    w = EpisodeWriter(root, fps=FPS, mode="thread")
    assert w.close(timeout=120)
    rows = episode_summaries(root)
    assert [(r["task"], r["length"]) for r in rows] == [(f"task {k}", 20 + k) for k in range(4)]
    assert len(open_dataset(root)) == 86 and not list_spool(root)
    _assert_episode_equal(episode_frames(root, 2), make_episode(22, 2), "task 2")
    final = _load_fresh(root)[root]
    assert [e[:2] for e in final["eps"]] == [[k, 20 + k] for k in range(4)] and final["frames"] == 86


DISK_FULL_SRC = EPISODE_SRC + textwrap.dedent(
    """
    import json, resource, signal, sys
    from vla_rl_ros.core.data.writer import EpisodeWriter

    root, limit, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # the stand-in for a full disk: no file of this process (and its worker) may grow past `limit`
    # bytes; a write beyond fails with EFBIG as it would with ENOSPC (the signal is ignored so
    # the write returns the error instead of killing the process)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    feats = S.make_features([f"j{i}" for i in range(3)], cameras=["front"], image_shape=(8, 10))
    w = EpisodeWriter(root, fps=10, features=feats)
    for i in range(n):
        w.submit(make_episode(150 * (i + 1), seed=i), task=f"task {i}")  # each episode's files larger
        w.wait(120)
    ok = w.close(120)
    print("RESULT", json.dumps({"saved": [[s.ticket, s.episode_index] for s in w.saved_episodes()],
                                 "failed": [[f.ticket, f.error[-300:]] for f in w.failed_episodes()],
                                 "closed": ok}))
    """
)


def test_disk_full_refuses_the_episode_cleanly_and_keeps_the_earlier_ones(tmp_path):
    """A full disk while logging (stand-in: RLIMIT_FSIZE on the writer's processes, episodes growing
    until their files no longer fit; a real ENOSPC takes the same path, an OSError from a write):
    the episodes that no longer fit are reported failed with the reason, one by one, the writer keeps running
    and closes cleanly, every episode reported saved loads in LeRobotDataset in a fresh process, the
    refused ones are kept in the spool's failed/ folder (their frames are not lost), and once space
    is back a new writer appends to the same root."""
    root = tmp_path / "full"
    r = _run_py(DISK_FULL_SRC, root, 250_000, 6, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.split("RESULT", 1)[1])
    saved, failed = res["saved"], res["failed"]
    print(f"\nsaved {len(saved)}, failed {len(failed)}: {failed[0][1][-160:] if failed else ''}")
    assert res["closed"] and len(saved) >= 1 and len(failed) >= 1 and len(saved) + len(failed) == 6
    assert max(t for t, _ in saved) < min(t for t, _ in failed)  # once full, every later episode refused
    assert all("File too large" in e or "EFBIG" in e or "No space" in e for _, e in failed), failed
    state = _load_fresh(root)[root]
    assert state["total"] == len(saved)
    kept = list((root / SPOOL_DIR / "failed").iterdir())
    assert len(kept) == len(failed) and all((k / "ERROR.txt").is_file() for k in kept)
    # space is back: the next writer appends after the saved ones
    with EpisodeWriter(root, fps=FPS, features=FEATS) as w:
        w.submit(make_episode(5, seed=99), task="after")
        assert w.wait(120)
    assert [s.episode_index for s in w.saved_episodes()] == [len(saved)]
    assert _load_fresh(root)[root]["total"] == len(saved) + 1
