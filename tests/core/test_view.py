"""``vla-rl-ros view``: the video, contact sheet, overview and Rerun recording of one real episode.

The dataset is real: two short scripted-expert episodes rendered by PyBullet (48x48, 12 steps),
written by the EpisodeWriter; a copy without the ``rl.*`` fields stands for a dataset imported from a
real robot, and one without cameras for a dataset that cannot be viewed.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lerobot.datasets.lerobot_dataset")
av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from vla_rl_ros.cli import main as cli_main
from vla_rl_ros.core.data import schema as S
from vla_rl_ros.core.data.reader import episode_frames
from vla_rl_ros.core.data.view import (
    OVERVIEW_NAME, RERUN_NAME, SHEET_NAME, VIDEO_NAME, Episode, ViewConfig, rerun_available, sheet_indices,
    strip_height, strip_lines,
)
from vla_rl_ros.core.data.writer import EpisodeWriter

STEPS, SIZE, FPS = 12, 48, 10
CFG = ViewConfig()
SCALE = -(-CFG.min_image_height // SIZE)  # 48 px images are enlarged 5x to 240 px
RL_KEYS = (S.ACTION_MEAN, S.SIGMA, S.LOG_PROB, S.CHUNK_ID, S.CHUNK_INDEX, S.POLICY_VERSION)


def _write(root, feats, episodes):
    with EpisodeWriter(root, fps=FPS, features=feats, mode="thread") as w:
        for frames, task, meta in episodes:
            w.submit([{k: v for k, v in f.items() if k in feats} for f in frames], task, meta)
    assert len(w.saved_episodes()) == len(episodes) and not w.failed_episodes()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from vla_rl_ros.core.collect import expert_episode
    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.core.sim.expert import ScriptedExpert
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    with PandaWorld(SimConfig(image_width=SIZE, image_height=SIZE, renderer="tiny", max_steps=STEPS)) as world:
        expert = ScriptedExpert(noise_std=0.03, seed=1)
        episodes = [expert_episode(world, expert, seed=3 + i, family="pick") for i in range(2)]
        expert.close()
    base = tmp_path_factory.mktemp("view")
    joints = list(PANDA.joint_names)
    full = S.make_features(joints, ("front",), image_shape=(SIZE, SIZE))
    _write(base / "sim", full, episodes)
    _write(base / "real", {k: v for k, v in full.items() if k not in RL_KEYS}, episodes[:1])
    _write(base / "blind", {k: v for k, v in full.items() if not k.startswith(S.IMAGE_PREFIX)}, episodes[:1])
    return base


def _decode(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    return frames, rate


def _rrd_rows(path) -> dict:
    """entity path -> [(step, time (s), first value or None)] of the recording's temporal rows."""
    from rerun.chunk import RrdReader

    rows: dict[str, list] = {}
    for ch in RrdReader(path).stream():
        if ch.is_static:
            continue
        rb = ch.to_record_batch()
        steps = rb.column("step").to_pylist()
        times = [t.total_seconds() for t in rb.column("time").to_pylist()]
        sc = [n for n in rb.schema.names if n.endswith("Scalars:scalars")]
        vals = [v[0] for v in rb.column(sc[0]).to_pylist()] if sc else [None] * len(steps)
        rows.setdefault(ch.entity_path, []).extend(zip(steps, times, vals))
    return {k: sorted(v) for k, v in rows.items()}


def test_view_writes_video_sheet_overview_and_recording(datasets, capsys):
    root = datasets / "sim"
    d = episode_frames(root, 1)
    n = len(d[S.STATE])
    assert n == STEPS
    assert rerun_available(), "rerun-sdk (requirements/extras.txt) is part of the test environment"
    assert cli_main(["view", str(root), "--episode", "1"]) == 0
    out = root / "view" / "episode_1"
    printed = capsys.readouterr().out
    for name in (VIDEO_NAME, SHEET_NAME, OVERVIEW_NAME, RERUN_NAME):
        assert str(out / name) in printed

    # video: every step, at the dataset's fps, the enlarged image over the 2-line strip
    h, w = SIZE * SCALE, SIZE * SCALE
    hv = h + strip_height(CFG) + (h + strip_height(CFG)) % 2
    frames, rate = _decode(out / VIDEO_NAME)
    assert len(frames) == n and rate == FPS
    assert frames[0].shape == (hv, w, 3)
    images = d[S.image_key("front")]
    for i in (0, n // 2, n - 1):  # the picture is the episode's own frame (lossy codec: close, not equal)
        big = images[i].repeat(SCALE, 0).repeat(SCALE, 1).astype(float)
        assert np.abs(frames[i][:h].astype(float) - big).mean() < 8.0
        other = images[(i + n // 2) % n].repeat(SCALE, 0).repeat(SCALE, 1).astype(float)
        assert np.abs(frames[i][:h].astype(float) - big).mean() < np.abs(frames[i][:h].astype(float) - other).mean()
    strip = frames[3][h:h + strip_height(CFG)].astype(float)
    assert strip.mean() < 80 and strip.max() > 150  # dark strip with light text on it
    assert np.abs(frames[3][h:].astype(float) - frames[9][h:]).mean() > 0.5  # its text changes

    # contact sheet: the 12 sampled frames, 4 per row, lossless PNG of the same enlarged pixels
    sheet = cv2.imread(str(out / SHEET_NAME))[..., ::-1]
    idx = sheet_indices(n, CFG.sheet_frames)
    assert len(idx) == min(n, CFG.sheet_frames) and idx[0] == 0 and idx[-1] == n - 1
    g, rows = CFG.sheet_gap_px, -(-len(idx) // CFG.sheet_columns)
    assert sheet.shape == (rows * hv + (rows + 1) * g, CFG.sheet_columns * w + (CFG.sheet_columns + 1) * g, 3)
    last_r, last_c = divmod(len(idx) - 1, CFG.sheet_columns)
    y, x = g + last_r * (hv + g), g + last_c * (w + g)
    assert np.array_equal(sheet[g:g + h, g:g + w], images[idx[0]].repeat(SCALE, 0).repeat(SCALE, 1))
    assert np.array_equal(sheet[y:y + h, x:x + w], images[idx[-1]].repeat(SCALE, 0).repeat(SCALE, 1))

    # overview: the sheet over five plots (state, action vs mean, noise, sigma, reward)
    ov = cv2.imread(str(out / OVERVIEW_NAME))
    assert ov is not None and ov.shape[0] > ov.shape[1] > 800
    assert ov.std() > 20 and len(np.unique(ov.reshape(-1, 3), axis=0)) > 500

    # Rerun recording: file magic, then every step of every series, on both timelines
    rrd = out / RERUN_NAME
    assert rrd.read_bytes()[:4] == b"RRF2"
    got = _rrd_rows(rrd)
    assert len(got["/camera/front"]) == n
    assert [s for s, _, _ in got["/camera/front"]] == list(range(n))
    assert [s for s, _, _ in got["/reward"]] == list(range(n))
    assert np.allclose([t for _, t, _ in got["/reward"]], d["timestamp"], atol=1e-6)
    assert np.allclose([v for _, _, v in got["/reward"]], d[S.REWARD], atol=1e-6)
    j = 3
    joint = f"panda_joint{j + 1}"
    for ent, col in ((f"/state/{joint}", d[S.STATE][:, j]), (f"/action/{joint}/executed", d[S.ACTION][:, j]),
                     (f"/action/{joint}/mean", d[S.ACTION_MEAN][:, j]), (f"/sigma/{joint}", d[S.SIGMA][:, j]),
                     (f"/noise/{joint}", d[S.ACTION][:, j] - d[S.ACTION_MEAN][:, j])):
        assert np.allclose([v for _, _, v in got[ent]], col, atol=1e-6), ent


def test_view_of_a_dataset_without_rl_fields_plots_what_exists(datasets, tmp_path):
    out = tmp_path / "v"
    assert cli_main(["view", str(datasets / "real"), "--out", str(out), "--no-rerun"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([VIDEO_NAME, SHEET_NAME, OVERVIEW_NAME])
    frames, _ = _decode(out / VIDEO_NAME)
    assert len(frames) == STEPS
    # the same episode with its rl.* fields: two plots more (noise, sigma; the action panel stays)
    assert cli_main(["view", str(datasets / "sim"), "--out", str(tmp_path / "full"), "--no-rerun"]) == 0
    full = cv2.imread(str(tmp_path / "full" / OVERVIEW_NAME))
    less = cv2.imread(str(out / OVERVIEW_NAME))
    assert round((full.shape[0] - less.shape[0]) / (CFG.plot_row_in * CFG.dpi)) == 2, (full.shape, less.shape)


def test_view_recording_without_rl_fields(datasets, tmp_path):
    pytest.importorskip("rerun")
    out = tmp_path / "v"
    assert cli_main(["view", str(datasets / "real"), "--out", str(out), "--rerun"]) == 0
    got = _rrd_rows(out / RERUN_NAME)
    assert len(got["/camera/front"]) == STEPS and len(got["/action/panda_joint1/executed"]) == STEPS
    assert not any(k.startswith(("/noise", "/sigma", "/action/panda_joint1/mean")) for k in got)


def test_view_errors_are_one_line_exit_2(datasets, tmp_path, capsys, monkeypatch):
    root = str(datasets / "sim")
    cases = [
        (["view", root, "--episode", "2"], "episode 2 out of range: dataset", "has 2 episodes"),
        (["view", str(tmp_path / "nothing")], "is not a LeRobot dataset", "meta/info.json"),
        (["view", str(datasets / "blind")], "has no camera images", S.IMAGE_PREFIX),
    ]
    for argv, *needles in cases:
        with pytest.raises(SystemExit) as e:
            cli_main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert all(s in err for s in needles), err
    assert not (datasets / "sim" / "view" / "episode_2").exists()  # nothing written for a bad episode

    monkeypatch.setitem(__import__("sys").modules, "rerun", None)  # rerun-sdk not importable
    with pytest.raises(SystemExit) as e:
        cli_main(["view", root, "--episode", "0", "--out", str(tmp_path / "r"), "--rerun"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "rerun-sdk" in err and "pip install -r requirements/extras.txt" in err
    assert not (tmp_path / "r").exists()
    # without --rerun the same run simply leaves the recording out
    assert cli_main(["view", root, "--episode", "0", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / VIDEO_NAME).exists() and not (tmp_path / "r" / RERUN_NAME).exists()


def test_strip_says_success_from_the_step_it_happened():
    n = 6
    ep = Episode(index=0, task="t", fps=FPS, cameras=["front"], images=[np.zeros((n, 4, 4, 3), np.uint8)],
                 joint_names=["a"], steps=np.arange(n), time=np.arange(n) / FPS, state=None, action=None,
                 action_mean=None, sigma=None, reward=np.linspace(0, 1, n),
                 success=np.array([0, 0, 0, 1, 0, 0], bool))
    texts = ["".join(t for t, _ in strip_lines(ep, i)[1]) for i in range(n)]
    assert ["SUCCESS" in t for t in texts] == [False, False, False, True, True, True]
    assert texts[5].startswith("reward +1.0000")
    assert "".join(t for t, _ in strip_lines(ep, 2)[0]).startswith("step 2/5   t 0.20s")
