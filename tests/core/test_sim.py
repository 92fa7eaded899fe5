"""PandaWorld and the task definitions, without ROS."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vla_rl_ros.core.robot import HOME, LOWER, UPPER
from vla_rl_ros.core.sim.tasks import (
    CUBE_SIZE,
    CUBES,
    FAMILIES,
    OBJECTS,
    PAD_SIZE,
    PADS,
    TABLE_Z,
    TASK_NAMES,
    Task,
    TaskSpec,
    WorldState,
    all_task_specs,
    parse_instruction,
)
from vla_rl_ros.core.sim.world import PandaWorld, SimConfig, StepInfo, sample_layout


@pytest.fixture(scope="module")
def world():
    w = PandaWorld(SimConfig(cameras=(), renderer="tiny", max_steps=120))
    yield w
    w.close()


def _rollout(w: PandaWorld, seed: int, actions) -> np.ndarray:
    w.reset(seed=seed, family="pick")
    qs = []
    for a in actions:
        w.apply_action(a)
        w.step_control()
        qs.append(np.concatenate([w.joint_positions(), w.joint_velocities()]))
    return np.array(qs)


# --------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("spec", all_task_specs(), ids=lambda s: s.name)
def test_every_instruction_parses_back_to_its_spec(spec):
    assert parse_instruction(spec.instruction) == spec
    assert TaskSpec.from_name(spec.name) == spec


def test_task_names_and_families():
    assert FAMILIES == ("pick", "push", "place")
    assert len(TASK_NAMES) == len(set(TASK_NAMES)) == 3 + 6 + 6
    assert "push_blue_cube_left" in TASK_NAMES and "place_red_cube_yellow_pad" in TASK_NAMES


def test_instruction_examples_and_variants():
    assert parse_instruction("pick up the red cube") == TaskSpec("pick", "red_cube")
    assert parse_instruction("  Pick up the RED cube. ") == TaskSpec("pick", "red_cube")
    assert parse_instruction("push the blue cube to the left") == TaskSpec("push", "blue_cube", direction="left")
    assert parse_instruction("slide the blue block right") == TaskSpec("push", "blue_cube", direction="right")
    assert parse_instruction("put the green cube on the yellow pad") == TaskSpec(
        "place", "green_cube", pad="yellow_pad"
    )
    assert parse_instruction("place the green cube onto the purple pad").pad == "purple_pad"


@pytest.mark.parametrize(
    "text", ["", "pick up the cube", "pick up the orange cube", "push the red cube up", "dance", None]
)
def test_unparseable_instruction_lists_accepted_forms(text):
    with pytest.raises(ValueError, match="pick up the <red|green|blue> cube|must be a string"):
        parse_instruction(text)


def test_bad_specs_and_families_raise():
    with pytest.raises(ValueError, match="valid families: pick, push, place"):
        TaskSpec("fly", "red_cube")
    with pytest.raises(ValueError, match="valid targets"):
        TaskSpec("pick", "pink_cube")
    with pytest.raises(ValueError, match="direction"):
        TaskSpec("push", "red_cube")
    with pytest.raises(ValueError, match="pad"):
        TaskSpec("place", "red_cube", pad="red_pad")
    with pytest.raises(ValueError, match="valid names"):
        TaskSpec.from_name("pick_pink_cube")
    with pytest.raises(ValueError, match="valid families"):
        SimConfig(task_families=("pick", "juggle"))


def _state(poses, ee, grasped=(), gripper=0.02):
    return WorldState(
        object_poses={k: (np.asarray(v, float), np.array([0, 0, 0, 1.0])) for k, v in poses.items()},
        ee_pos=np.asarray(ee, float),
        gripper=gripper,
        grasped=frozenset(grasped),
    )


def test_success_and_reward_semantics():
    rest = TABLE_Z + CUBE_SIZE / 2
    init = {"red_cube": np.array([0.5, 0.0, rest]), "yellow_pad": np.array([0.5, 0.2, 0.001])}
    pick = Task(TaskSpec("pick", "red_cube"), init)
    lifted = {"red_cube": [0.5, 0.0, rest + 0.09], "yellow_pad": [0.5, 0.2, 0.001]}
    assert pick.success(_state(lifted, [0.5, 0, rest + 0.09], grasped=["red_cube"]))
    assert not pick.success(_state(lifted, [0.5, 0, rest + 0.09]))  # not in the gripper
    low = {"red_cube": [0.5, 0.0, rest + 0.03], "yellow_pad": [0.5, 0.2, 0.001]}
    assert not pick.success(_state(low, [0.5, 0, rest + 0.03], grasped=["red_cube"]))
    r_far = pick.reward(_state(init, [0.3, 0.3, 0.4]))
    r_near = pick.reward(_state(init, [0.5, 0.0, rest + 0.01]))
    r_held = pick.reward(_state(low, [0.5, 0, rest + 0.03], grasped=["red_cube"]))
    assert 0 <= r_far < r_near < r_held < 1.0
    assert pick.reward(_state(lifted, [0.5, 0, rest + 0.09], grasped=["red_cube"])) == 1.0

    push = Task(TaskSpec("push", "red_cube", direction="left"), init)  # left = +y
    moved = {"red_cube": [0.5, 0.11, rest], "yellow_pad": [0.5, 0.2, 0.001]}
    assert push.success(_state(moved, [0.5, 0.06, rest]))
    wrong_way = {"red_cube": [0.5, -0.11, rest], "yellow_pad": [0.5, 0.2, 0.001]}
    assert not push.success(_state(wrong_way, [0.5, -0.06, rest]))
    carried = {"red_cube": [0.5, 0.11, rest + 0.05], "yellow_pad": [0.5, 0.2, 0.001]}
    assert not push.success(_state(carried, [0.5, 0.11, rest + 0.05], grasped=["red_cube"]))
    half = {"red_cube": [0.5, 0.05, rest], "yellow_pad": [0.5, 0.2, 0.001]}
    assert push.reward(_state(init, [0.5, -0.05, rest])) < push.reward(_state(half, [0.5, 0.0, rest])) < 1

    place = Task(TaskSpec("place", "red_cube", pad="yellow_pad"), init)
    on = {"red_cube": [0.52, 0.18, rest], "yellow_pad": [0.5, 0.2, 0.001]}
    assert place.success(_state(on, [0.52, 0.18, 0.12], gripper=0.04))
    assert not place.success(_state(on, [0.52, 0.18, rest], grasped=["red_cube"]))
    off = {"red_cube": [0.5, 0.2 + PAD_SIZE / 2 + 0.01, rest], "yellow_pad": [0.5, 0.2, 0.001]}
    assert not place.success(_state(off, [0.5, 0.3, 0.12]))


def test_layouts_do_not_overlap():
    for seed in range(60):
        rng = np.random.default_rng(seed)
        spec = all_task_specs()[seed % len(all_task_specs())]
        lay = sample_layout(rng, spec)
        assert set(lay) == set(OBJECTS)
        for i, a in enumerate(CUBES):
            for b in CUBES[i + 1 :]:
                assert np.hypot(lay[a][0] - lay[b][0], lay[a][1] - lay[b][1]) >= 0.10
            for pad in PADS:  # no cube lies on a pad
                assert max(abs(lay[a][0] - lay[pad][0]), abs(lay[a][1] - lay[pad][1])) > PAD_SIZE / 2


# --------------------------------------------------------------------------- world


def test_reset_is_reproducible(world):
    world.reset(seed=11)
    instr, fam = world.task.instruction, world.task.family
    poses = world.object_poses()
    other = PandaWorld(SimConfig(cameras=(), renderer="tiny"))
    try:
        other.reset(seed=11)
        assert other.task.instruction == instr and other.task.family == fam
        for name, (pos, quat) in other.object_poses().items():
            np.testing.assert_array_equal(pos, poses[name][0])
            np.testing.assert_array_equal(quat, poses[name][1])
        rng = np.random.default_rng(0)
        arm = np.r_[np.ones(7), 0.0]
        actions = [np.clip(HOME + rng.normal(0, 0.15, 8) * arm, LOWER, UPPER) for _ in range(8)]
        a = _rollout(world, 3, actions)
        _rollout(world, 4, actions[:3])  # another episode in between changes nothing
        b = _rollout(world, 3, actions)
        c = _rollout(other, 3, actions)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    finally:
        other.close()


def test_seeds_differ_and_choose_families(world):
    layouts, families, instructions = [], set(), set()
    for seed in range(12):
        world.reset(seed=seed)
        families.add(world.task.family)
        instructions.add(world.task.instruction)
        layouts.append(np.concatenate([p for p, _ in world.object_poses().values()]))
        assert world.task.family in FAMILIES
    assert families == set(FAMILIES)
    assert len(instructions) > 5
    assert all(np.abs(layouts[0] - l).max() > 1e-3 for l in layouts[1:])
    world.reset(seed=5, family="push")
    assert world.task.family == "push" and world.task.spec.direction in ("left", "right")
    np.testing.assert_allclose(world.joint_positions(), HOME, atol=1e-3)


def test_bad_reset_arguments(world):
    with pytest.raises(ValueError, match="valid families: pick, push, place"):
        world.reset(seed=0, family="stack")
    with pytest.raises(ValueError, match="seed"):
        world.reset(seed=-1)


@pytest.mark.parametrize(
    "action,match",
    [
        (np.zeros(7), r"shape \(8,\)"),
        (np.zeros((2, 8)), r"shape \(8,\)"),
        (np.r_[HOME[:7], np.nan], "non-finite"),
        (np.r_[np.inf, HOME[1:]], "non-finite"),
        (np.r_[HOME[:3], 0.5, HOME[4:]], "panda_joint4=0.5000 outside"),
        (np.r_[HOME[:7], 0.05], "panda_finger_joint1"),
    ],
)
def test_apply_action_rejects_bad_input(world, action, match):
    world.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        world.apply_action(action)
    np.testing.assert_array_equal(world.last_target, HOME)  # nothing was applied


def test_step_control_timing_and_timeout():
    w = PandaWorld(SimConfig(cameras=(), renderer="tiny", max_steps=3, control_rate=20.0))
    try:
        w.reset(seed=2, family="pick")
        assert w.config.substeps == 12 and w.sim_time == 0.0
        infos = [w.step_control() for _ in range(3)]
        assert [i.step for i in infos] == [1, 2, 3]
        assert all(isinstance(i, StepInfo) and 0.0 <= i.reward <= 1.0 for i in infos)
        assert [i.done for i in infos] == [False, False, True]
        assert infos[-1].truncated and not infos[-1].success
        assert w.sim_time == pytest.approx(3 / 20.0)
        np.testing.assert_allclose(w.joint_positions(), HOME, atol=0.02)  # held at HOME
        obs, r, done, info = w.step(HOME, render=False)
        assert done and set(obs) >= {"state", "velocity", "images", "instruction"}
        assert obs["state"].shape == (8,) and info["step"] == 4
    finally:
        w.close()
    with pytest.raises(ValueError, match="integer multiple"):
        SimConfig(control_rate=7.0)


def test_object_poses_and_names(world):
    world.reset(seed=1)
    poses = world.object_poses()
    assert set(poses) == {"red_cube", "green_cube", "blue_cube", "yellow_pad", "purple_pad"}
    for name, (pos, quat) in poses.items():
        assert pos.shape == (3,) and quat.shape == (4,)
        assert 0.3 < pos[0] < 0.7 and abs(pos[1]) < 0.3
        if name in CUBES:
            assert pos[2] == pytest.approx(TABLE_Z + CUBE_SIZE / 2, abs=2e-3)


def test_render_shapes_and_content():
    w = PandaWorld(SimConfig(image_width=64, image_height=48, cameras=("front", "wrist"), renderer="tiny"))
    try:
        assert w.renderer_name == "tiny"
        w.reset(seed=3)
        for cam in ("front", "wrist"):
            img = w.render(cam)
            assert img.shape == (48, 64, 3) and img.dtype == np.uint8
            assert img.std() > 10
        obs = w.observe()
        assert set(obs["images"]) == {"front", "wrist"}
        with pytest.raises(ValueError, match="unknown camera"):
            w.render("top")
        # the cubes are visible: red-dominant pixels exist in the front view
        img = w.render("front").astype(int)
        assert ((img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)).sum() >= 3
    finally:
        w.close()
    with pytest.raises(ValueError, match="unknown renderer"):
        SimConfig(renderer="vulkan")
    with pytest.raises(ValueError, match="unknown camera"):
        SimConfig(cameras=("front", "top"))


def test_auto_renderer_resolves():
    w = PandaWorld(SimConfig(image_width=32, image_height=32, renderer="auto"))
    try:
        assert w.renderer_name in ("egl", "tiny")
        assert w.render().shape == (32, 32, 3)
    finally:
        w.close()


def test_close_is_idempotent():
    w = PandaWorld(SimConfig(cameras=()))
    w.close()
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.step_control()


def test_core_sim_imports_no_ros():
    code = (
        "import sys, vla_rl_ros.core.sim.world, vla_rl_ros.core.sim.expert, vla_rl_ros.core.sim.tasks;"
        "bad=[m for m in sys.modules if m.startswith('rclpy') or m.split('.')[0].endswith('_msgs')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
