"""rosbag2 / MCAP in and out (issue 21, item 3): a dataset of real simulated expert episodes goes
to a bag and back with every frame and value kept (MCAP and SQLite 3), and a bag written directly
with ``rosbags`` -- as an outside tool would: its own joint order, bgr8 frames at another rate and
size, jittered stamps, no markers, no trajectory topic -- is imported with episodes cut at the gaps,
resampled at the dataset rate and the action taken from the next joint state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_rl_ros.cli import main as cli_main
from vla_rl_ros.core.bags import BagExportOptions, BagImportOptions, export_bag, import_bag
from vla_rl_ros.core.collect import ENV_STATE_NAMES, expert_episode
from vla_rl_ros.core.data import schema as S
from vla_rl_ros.core.data.reader import episode_frames, episode_summaries
from vla_rl_ros.core.data.store import read_info
from vla_rl_ros.core.data.writer import EpisodeWriter
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.core.sim.expert import ScriptedExpert
from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

NS = 1_000_000_000


pytestmark = pytest.mark.usefixtures("private_hf_cache")  # tests/conftest.py


@pytest.fixture(scope="module")
def expert_dataset(tmp_path_factory):
    """Two real PyBullet expert episodes (pick, push) in the logger's layout, with the privileged
    environment state, written by the project's writer."""
    root = tmp_path_factory.mktemp("bags") / "demos"
    world = PandaWorld(SimConfig(image_width=32, image_height=32, renderer="tiny", cameras=("front",)))
    expert = ScriptedExpert()
    feats = S.make_features(list(PANDA.joint_names), cameras=["front"], image_shape=(32, 32),
                            environment_state=ENV_STATE_NAMES)
    try:
        with EpisodeWriter(root, fps=10, features=feats, mode="thread") as w:
            for seed, family in ((3, "pick"), (4, "push")):
                frames, task, meta = expert_episode(world, expert, seed, family)
                w.submit(frames, task, meta=meta)
            assert w.close(timeout=120) and not w.failed_episodes()
    finally:
        world.close()
    return root


def _assert_same_dataset(a, b):
    fa, fb = read_info(a)["features"], read_info(b)["features"]
    assert S.normalize_features(fa) == S.normalize_features(fb)
    sa, sb = episode_summaries(a), episode_summaries(b)
    assert len(sa) == len(sb) == 2
    for ra, rb in zip(sa, sb):
        assert (ra["task"], ra["length"], ra["success"]) == (rb["task"], rb["length"], rb["success"])
        assert {k: v for k, v in rb["meta"].items() if not k.startswith(("source_bag", "bag_"))} == ra["meta"]
        ea, eb = episode_frames(a, ra["episode_index"]), episode_frames(b, rb["episode_index"])
        for k in S.user_keys(fa):
            x, y = np.asarray(ea[k]), np.asarray(eb[k])
            assert x.shape == y.shape and x.dtype == y.dtype, k
            np.testing.assert_array_equal(x, y, err_msg=k)  # bit-exact, NaN log-probs included


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_dataset_to_bag_to_dataset_keeps_every_frame_and_value(expert_dataset, tmp_path, storage):
    bag = tmp_path / f"demos_{storage}"
    out = export_bag(expert_dataset, bag, options=BagExportOptions(storage=storage))
    n = sum(r["length"] for r in episode_summaries(expert_dataset))
    assert out["episodes"] == 2 and out["frames"] == n
    assert {"/camera/image_raw", "/joint_states", "/vla/episode", "/vla/frame", "/vla/reward",
            "/joint_trajectory_controller/joint_trajectory"} == set(out["topics"])
    if storage == "mcap":
        assert list(bag.glob("*.mcap")) and (bag / "metadata.yaml").is_file()
    back = tmp_path / "back"
    rep = import_bag(bag, back)
    assert (rep.episodes, rep.frames, rep.source, rep.action_from) == (2, n, "markers", "topic")
    _assert_same_dataset(expert_dataset, back)


def test_the_cli_round_trip_and_its_errors(expert_dataset, tmp_path, capsys):
    bag = tmp_path / "bag"
    assert cli_main(["export-bag", str(expert_dataset), "--out", str(bag), "--episode-ids", "1"]) == 0
    assert cli_main(["import-bag", str(bag), "--out", str(tmp_path / "ds")]) == 0
    (only,) = episode_summaries(tmp_path / "ds")
    assert only["task"] == episode_summaries(expert_dataset)[1]["task"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # the bag exists already: refused, nothing overwritten
        cli_main(["export-bag", str(expert_dataset), "--out", str(bag)])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a topic the bag does not have: the message lists its topics
        cli_main(["import-bag", str(bag), "--out", str(tmp_path / "x"), "--joint-states", "/arm/joints"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "/arm/joints" in err and "/joint_states" in err
    with pytest.raises(SystemExit) as e:
        cli_main(["import-bag", str(tmp_path / "nope"), "--out", str(tmp_path / "y")])
    assert e.value.code == 2 and "no bag" in capsys.readouterr().err


def _outside_bag(path, episodes):
    """A bag as another tool writes it: rosbags' own Writer, Humble definitions, no markers,
    joint states in a shuffled joint order at 50 Hz, bgr8 camera frames of 48x64 at 20 Hz with
    stamps up to 3 ms early, and 3 s of silence between episodes."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    order = [PANDA.joint_names[i] for i in (3, 0, 7, 1, 6, 2, 5, 4)]
    rng = np.random.default_rng(0)

    def hdr(t):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // NS, nanosec=t % NS),
                                        frame_id="")

    truth = []
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        cj = w.add_connection("/arm/joint_states", "sensor_msgs/msg/JointState", typestore=ts)
        ci = w.add_connection("/wrist/color", "sensor_msgs/msg/Image", typestore=ts)
        t_ep = 5 * NS
        for dur_s in episodes:
            q_of = lambda t, t_ep=t_ep: np.array([np.sin(0.3 * j + (t - t_ep) / NS) for j in range(8)])  # noqa: E731
            for k in range(int(dur_s * 50) + 1):
                t = t_ep + k * NS // 50
                q = q_of(t)
                pos = np.array([q[PANDA.joint_names.index(n)] for n in order])
                msg = T["sensor_msgs/msg/JointState"](header=hdr(t), name=order, position=pos,
                                                      velocity=np.zeros(0), effort=np.zeros(0))
                w.write(cj, t, bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState")))
            for k in range(int(dur_s * 20) + 1):
                t = t_ep + k * NS // 20 - int(rng.integers(0, 3_000_000))  # stamped up to 3 ms early
                rgb = np.zeros((48, 64, 3), np.uint8)
                rgb[..., 0], rgb[..., 2] = k % 256, 255 - k % 256  # red counts frames, blue the reverse
                msg = T["sensor_msgs/msg/Image"](header=hdr(t), height=48, width=64, encoding="bgr8",
                                                 is_bigendian=0, step=64 * 3,
                                                 data=np.ascontiguousarray(rgb[..., ::-1]).reshape(-1))
                w.write(ci, t, bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/Image")))
            truth.append((t_ep, dur_s, q_of))
            t_ep += int((dur_s + 3) * NS)
    return truth


def test_a_bag_written_by_another_tool_is_cut_at_gaps_and_resampled(tmp_path):
    bag = tmp_path / "outside"
    truth = _outside_bag(bag, episodes=(2.0, 1.5))
    out = tmp_path / "ds"
    rep = import_bag(bag, out, BagImportOptions(cameras=("wrist=/wrist/color",), joint_states="/arm/joint_states",
                                                joint_names=tuple(PANDA.joint_names), fps=10.0, distro="humble",
                                                task="stack the blocks"))
    assert (rep.episodes, rep.source, rep.action_from) == (2, "gaps", "next state")
    rows = episode_summaries(out)
    assert [r["length"] for r in rows] == [21, 16]  # 2.0 s and 1.5 s at 10 Hz, both ends included
    assert {r["task"] for r in rows} == {"stack the blocks"}
    info = read_info(out)
    assert info["fps"] == 10 and info["features"][S.image_key("wrist")]["shape"] == [48, 64, 3]
    assert info["features"][S.STATE]["names"] == list(PANDA.joint_names)
    for row, (t0, _, q_of) in zip(rows, truth):
        fr = episode_frames(out, row["episode_index"])
        ticks = t0 + np.arange(row["length"]) * NS // 10
        # joint states at 50 Hz: the tick's own message, in the dataset's joint order
        np.testing.assert_allclose(fr[S.STATE], np.stack([q_of(t) for t in ticks]), atol=1e-6)
        np.testing.assert_array_equal(fr[S.ACTION][:-1], fr[S.STATE][1:])
        np.testing.assert_array_equal(fr[S.ACTION][-1], fr[S.STATE][-1])
        # camera at 20 Hz with jitter: tick k holds the newest frame stamped at or before it, 2k,
        # converted from bgr8 to RGB (red = frame count)
        red, blue = fr[S.image_key("wrist")][:, 0, 0, 0].astype(int), fr[S.image_key("wrist")][:, 0, 0, 2]
        np.testing.assert_array_equal(red, 2 * np.arange(len(red)))
        assert np.all(blue.astype(int) == 255 - red)
        assert fr[S.DONE][-1] and not fr[S.DONE][:-1].any() and not fr[S.SUCCESS].any()
        assert np.all(np.isnan(fr[S.LOG_PROB])) and not fr[S.SIGMA].any()
        assert json.dumps(row["meta"]) and row["meta"]["source_bag"] == str(bag.resolve())
