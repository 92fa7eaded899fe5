"""Failure diagnosis (core/sim/diagnose.py): the classes on hand-made traces, and on real episodes."""

from __future__ import annotations

import numpy as np
import pytest

from vla_rl_ros.core.sim.diagnose import EpisodeWatch, classify, failure_table
from vla_rl_ros.core.sim.tasks import CUBES


def _watch(family="pick", pad=None, **kw):
    w = EpisodeWatch(family=family, target="red_cube", pad=pad)
    w.init = {c: np.array([0.5, 0.1 * i, 0.02]) for i, c in enumerate(CUBES)}
    w.init.update({"yellow_pad": np.array([0.6, -0.2, 0.0]), "purple_pad": np.array([0.6, 0.2, 0.0])})
    w.final = {k: v.copy() for k, v in w.init.items()}
    for k, v in kw.items():
        setattr(w, k, v)
    return w


def test_classes_from_traces():
    assert classify(_watch(), True)[0] is None
    assert classify(_watch(min_dist=0.05), False) == ("no grasp", {"closest_cm": 5.0})
    c, d = classify(_watch(first_close=[0.021, -0.004, 0.006], min_dist=0.02), False)
    assert c == "missed grasp" and d["offset_cm"] == [2.1, -0.4, 0.6]
    assert classify(_watch(held_ever=True, held_last=False), False)[0] == "dropped"
    assert classify(_watch(held_ever=True, held_last=True), False)[0] == "not lifted"
    w = _watch(other_grasped=True)
    assert classify(w, False)[0] == "wrong cube"
    w = _watch()
    w.final["green_cube"] = w.final["green_cube"] + np.array([0.0, 0.06, 0.0])  # the other cube moved
    assert classify(w, False) == ("wrong cube", {"cube": "green_cube", "moved_cm": 6.0})
    w = _watch("place", pad="purple_pad", held_ever=True, held_last=False)
    w.final["red_cube"] = np.array([0.7, 0.25, 0.02])
    c, d = classify(w, False)
    assert c == "off pad" and d["offset_cm"] == [10.0, 5.0]
    assert classify(_watch("place", pad="purple_pad", held_ever=True, held_last=True), False)[0] == "not released"
    w = _watch("push")
    w.final["red_cube"] = w.final["red_cube"] + np.array([0.0, 0.04, 0.0])
    assert classify(w, False) == ("short push", {"moved_cm": 4.0, "needed_cm": 10.0})
    assert classify(_watch("push", held_ever=True), False)[0] == "lifted"


def test_real_episodes_are_diagnosed():
    """A policy that holds the arm still never closes the gripper: every pick/place fails as
    'no grasp' with its true closest distance; the table counts them."""
    from vla_rl_ros.core.policy.evaluate import run_episode
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    world = PandaWorld(SimConfig(image_width=32, image_height=32, max_steps=6, renderer="tiny"))
    try:
        hold = lambda o: np.tile(np.asarray(o["state"], dtype=np.float64), (4, 1))  # noqa: E731
        res = [run_episode(world, hold, s, fam, diagnose=True) for s, fam in ((3, "pick"), (4, "place"), (5, "push"))]
        world.reset(seed=3, family="pick")
        true_d = float(np.linalg.norm(world.ee_pose()[0] - world.object_poses()[world.task.spec.target][0]))
    finally:
        world.close()
    assert [r.failure for r in res] == ["no grasp", "no grasp", "short push"]
    assert res[0].detail["closest_cm"] == pytest.approx(100 * true_d, abs=1.5)  # the arm barely moves
    table = failure_table(res)
    assert "no grasp" in table and "short push" in table and "overall" in table


def test_a_one_tick_graze_is_a_missed_grasp_and_three_ticks_a_drop():
    from vla_rl_ros.core.sim.tasks import WorldState

    def run(held_ticks):
        w = _watch()
        poses = {k: (v, np.array([0, 0, 0, 1.0])) for k, v in w.init.items()}
        for i in range(6):
            held = frozenset({"red_cube"}) if 1 <= i <= held_ticks else frozenset()
            w.step(WorldState(poses, np.array([0.52, 0.0, 0.03]), 0.0 if i else 0.04, held))
        return classify(w, False)

    c, d = run(1)
    assert c == "missed grasp" and d["offset_cm"] == [2.0, 0.0, 1.0]
    assert run(3)[0] == "dropped"


def test_evaluate_cli_diagnoses_in_worker_processes(tmp_path):
    import json
    import subprocess
    import sys

    from tests.core.test_policy import small_model
    from vla_rl_ros.core.policy.backends import export_onnx
    from vla_rl_ros.core.policy.checkpoint import save_checkpoint

    m = small_model()
    onnx = export_onnx(m, tmp_path / "model.onnx")
    ck = save_checkpoint(m, tmp_path / "ckpt", version=1, extra_files={"model.onnx": onnx})
    base = [sys.executable, "-m", "vla_rl_ros.cli", "evaluate", "--checkpoint", str(ck), "--episodes", "2",
            "--seed", "1000", "--max-steps", "4"]
    bad = subprocess.run(base + ["--diagnose"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--diagnose needs --direct" in bad.stderr
    out = subprocess.run(base + ["--direct", "--workers", "2", "--backend", "onnxruntime",
                                 "--diagnose-plot", str(tmp_path / "f.png"), "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "why episodes failed" in out.stdout and (tmp_path / "f.png").stat().st_size > 1000
    res = json.loads((tmp_path / "r.json").read_text())
    # 4 steps of an untrained policy: nothing succeeds, every episode has a class and its numbers
    assert [r["success"] for r in res] == [False, False]
    assert all(r["failure"] in ("no grasp", "short push", "missed grasp") and r["detail"] for r in res)
