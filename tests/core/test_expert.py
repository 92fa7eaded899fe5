"""The scripted IK expert drives the PyBullet world to success, without ROS and without rendering."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from vla_rl_ros.core.robot import HOME, LOWER, UPPER
from vla_rl_ros.core.sim.expert import ScriptedExpert
from vla_rl_ros.core.sim.tasks import FAMILIES, TaskSpec
from vla_rl_ros.core.sim.world import PandaWorld, SimConfig


@pytest.fixture(scope="module")
def world():
    w = PandaWorld(SimConfig(cameras=(), renderer="tiny"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def expert():
    e = ScriptedExpert()
    yield e
    e.close()


def run_episode(world, expert, seed, family, execute=1, horizon=4):
    """One episode; the expert sees the instruction string only. ``execute`` > 1 runs that many
    rows of each planned chunk before re-planning."""
    world.reset(seed=seed, family=family)
    expert.reset(world.task.instruction)
    prev = world.joint_positions()
    while True:
        if execute == 1:
            rows = [expert.act(world.joint_positions(), world.object_poses(), 0.1)]
        else:
            rows = expert.plan_chunk(world.joint_positions(), world.object_poses(), horizon, 0.1)[:execute]
        for a in rows:
            assert np.all(a >= LOWER) and np.all(a <= UPPER)
            assert np.abs(a[:7] - prev[:7]).max() < 0.45  # smooth: bounded step from the state
            world.apply_action(a)
            info = world.step_control()
            prev = world.joint_positions()
            if info.done:
                return info


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_solves_seeded_episodes(world, expert, family):
    for seed in (0, 1, 2, 3):
        info = run_episode(world, expert, seed, family)
        assert info.success, f"{family} seed {seed}: {world.task.instruction!r} failed ({expert.phase})"
        assert info.step < 80


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_chunks_can_be_executed_several_steps_at_a_time(world, expert, family):
    info = run_episode(world, expert, 7, family, execute=3, horizon=6)
    assert info.success and info.step < 90


def test_expert_with_noise_still_succeeds_and_stays_in_limits(world):
    e = ScriptedExpert(noise_std=0.01, seed=4)
    try:
        for family in FAMILIES:
            assert run_episode(world, e, 5, family).success
    finally:
        e.close()


def test_expert_is_deterministic_and_chunk_row0_matches_act(world):
    world.reset(seed=9, family="place")
    q, poses = world.joint_positions(), world.object_poses()
    a, b = ScriptedExpert(), ScriptedExpert()
    try:
        a.reset(world.task.spec)
        b.reset(world.task.instruction)
        chunk = a.plan_chunk(q, poses, 5, 0.1)
        assert chunk.shape == (5, 8)
        np.testing.assert_array_equal(chunk[0], b.act(q, poses, 0.1))
        assert a.phase == b.phase
        # the look-ahead rows move toward the cube (downward, on the way to it)
        assert np.abs(np.diff(chunk[:, :7], axis=0)).max() < 0.25
        assert np.all(chunk >= LOWER) and np.all(chunk <= UPPER)
    finally:
        a.close()
        b.close()


def test_noise_is_seeded_and_kept_inside_limits():
    spec = TaskSpec("pick", "red_cube")
    poses = {"red_cube": ([0.5, 0.1, 0.02], [0, 0, 0, 1])}  # plain lists, as from a message
    outs = []
    for seed in (1, 1, 2):
        e = ScriptedExpert(noise_std=0.5, seed=seed)
        e.reset(spec)
        edge = HOME.copy()
        edge[3] = -0.01  # next to joint4's upper limit (0.0)
        outs.append(np.array([e.act(edge, poses, 0.1) for _ in range(20)]))
        e.close()
        assert np.all(outs[-1] >= LOWER) and np.all(outs[-1] <= UPPER)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0] - outs[2]).max() > 0.01
    with pytest.raises(ValueError, match="noise_std"):
        ScriptedExpert(noise_std=[0.1, 0.2])
    with pytest.raises(ValueError, match="noise_std"):
        ScriptedExpert(noise_std=-1.0)


def test_expert_bad_inputs(expert):
    fresh = ScriptedExpert()
    try:
        with pytest.raises(RuntimeError, match="reset"):
            fresh.act(HOME, {}, 0.1)
    finally:
        fresh.close()
    with pytest.raises(ValueError, match="accepted forms"):
        expert.reset("make me a sandwich")
    expert.reset("put the blue cube on the yellow pad")
    poses = {"blue_cube": ([0.5, 0.1, 0.02], [0, 0, 0, 1])}
    with pytest.raises(ValueError, match="yellow_pad"):
        expert.act(HOME, poses, 0.1)
    poses["yellow_pad"] = ([0.5, -0.1, 0.001], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="8 finite"):
        expert.act(HOME[:7], poses, 0.1)
    with pytest.raises(ValueError, match="8 finite"):
        expert.act(np.r_[HOME[:7], np.nan], poses, 0.1)
    with pytest.raises(ValueError, match="horizon"):
        expert.plan_chunk(HOME, poses, 0, 0.1)
    assert expert.act(HOME, poses, 0.1).shape == (8,)


def _expert_process(conn):
    """Child process: an expert that only ever sees what arrives through the pipe."""
    e = ScriptedExpert()
    while True:
        msg = conn.recv()
        if msg is None:
            break
        if isinstance(msg, str):
            e.reset(msg)
            continue
        q, poses = msg
        conn.send(e.plan_chunk(q, poses, 4, 0.1))
    e.close()


def test_expert_in_a_separate_process(world):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_expert_process, args=(child,), daemon=True)
    proc.start()
    try:
        world.reset(seed=12, family="pick")
        parent.send(world.task.instruction)
        for _ in range(80):
            poses = {k: (p.tolist(), q.tolist()) for k, (p, q) in world.object_poses().items()}
            parent.send((world.joint_positions(), poses))
            chunk = parent.recv()
            world.apply_action(chunk[0])
            info = world.step_control()
            if info.done:
                break
        assert info.success
    finally:
        parent.send(None)
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
