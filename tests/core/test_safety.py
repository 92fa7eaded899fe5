"""The safety layer (core/safety.py) and robot profiles (core/robot_profile.py), without ROS."""

from __future__ import annotations

import numpy as np
import pytest

from vla_rl_ros.core.robot import ACTION_JOINTS
from vla_rl_ros.core.robot_profile import (ProfileError, available_profiles, limits_from_urdf, load_profile,
                                           parse_profile)
from vla_rl_ros.core.safety import Refused, SafetyConfig, SafetyLayer

DT = 0.1


def _layer(name="panda", **kw) -> SafetyLayer:
    return SafetyLayer(load_profile(name), SafetyConfig(**kw))


def _respects_limits(layer: SafetyLayer, cmd, q, dq=None) -> None:
    """Every target inside the soft limits; every segment's velocity and acceleration within the
    limits at the command's own timing (the path starts at the measured state)."""
    assert np.all(cmd.positions >= layer.lo - 1e-12) and np.all(cmd.positions <= layer.hi + 1e-12)
    times = np.concatenate([[0.0], cmd.times])
    assert np.all(np.diff(times) > 0)
    path = np.vstack([np.clip(q, layer.lo, layer.hi)[None], cmd.positions])
    vel = np.diff(path, axis=0) / np.diff(times)[:, None]
    assert np.all(np.abs(vel) <= layer.vmax * (1 + 1e-9)), np.max(np.abs(vel) / layer.vmax)
    v0 = np.zeros_like(q) if dq is None else dq
    acc = np.diff(np.vstack([v0[None], vel]), axis=0) / np.diff(times)[:, None]
    assert np.all(np.abs(acc) <= layer.amax * (1 + 1e-6)), np.max(np.abs(acc) / layer.amax)
    assert np.all(np.abs(cmd.velocities) <= layer.vmax + 1e-12) and np.all(cmd.velocities[-1] == 0)


def test_every_shipped_profile_loads_and_maps_or_refuses_the_panda_checkpoint():
    assert {"panda", "fr3", "ur5e", "so100"} <= set(available_profiles())
    for name in ("panda", "fr3"):
        p = load_profile(name)
        assert list(p.policy_index(ACTION_JOINTS)) == list(range(8))
    for name in ("ur5e", "so100"):
        with pytest.raises(ProfileError, match=f"do not map onto robot '{name}'"):
            load_profile(name).policy_index(ACTION_JOINTS)
    assert load_profile("fr3").controller_joints == tuple(f"fr3_joint{i}" for i in range(1, 8))  # gripper: action
    assert load_profile("so100").controller_joints[-1] == "gripper"  # a joint of the arm controller
    with pytest.raises(ProfileError, match="no robot profile 'kuka'"):
        load_profile("kuka")


def test_malformed_profiles_are_refused_with_the_field_named():
    good = {"name": "x", "arm": {"joints": ["a", "b"], "topic": "/c/joint_trajectory", "action": "/c/f"},
            "gripper": {"interface": "none"},
            "limits": {"lower": [-1, -1], "upper": [1, 1], "velocity": [1, 1], "acceleration": [2, 2]},
            "home": [0, 0], "workspace": {"min": [0, 0, 0], "max": [1, 1, 1]}}
    assert parse_profile(good).dof == 2
    bad = [({"limits": {**good["limits"], "upper": [1]}}, "upper must be a list of 2"),
           ({"limits": {**good["limits"], "velocity": [1, 0]}}, "velocity, acceleration > 0"),
           ({"home": [0, 5]}, "home .* outside"),
           ({"arm": {**good["arm"], "topic": "bad topic!"}}, "arm.topic must be a ROS name"),
           ({"gripper": {"interface": "magnet"}}, "gripper.interface"),
           ({"gripper": {"interface": "joint", "joint": "a"}}, "also an arm joint"),
           ({"speed": 3}, "unknown keys"),
           ({"limits": {**good["limits"], "lower": [float("nan"), 0]}}, "finite")]
    for change, msg in bad:
        with pytest.raises(ProfileError, match=msg):
            parse_profile({**good, **change})


def test_limits_from_a_urdf_string():
    urdf = """<robot name="r"><joint name="a" type="revolute"><limit lower="-1.5" upper="1.0" velocity="0.5"/>
              </joint><joint name="b" type="fixed"/></robot>"""
    lim = limits_from_urdf(urdf, ["a", "b", "c"])
    assert lim["lower"][0] == -1.5 and lim["upper"][0] == 1.0 and lim["velocity"][0] == 0.5
    assert np.all(np.isnan(lim["lower"][1:]))
    with pytest.raises(ProfileError, match="not valid URDF"):
        limits_from_urdf("<robot", ["a"])


def test_a_slow_chunk_passes_unchanged_and_a_fast_one_is_slowed_not_distorted():
    layer = _layer()
    q = load_profile("panda").home.copy()
    slow = q + np.outer(np.arange(1, 9), np.full(8, 0.005)) * np.array([1] * 7 + [0])
    cmd = layer.check(slow, DT, q)
    assert cmd.time_scale == 1.0 and cmd.clipped == 0
    np.testing.assert_allclose(cmd.positions, slow)
    np.testing.assert_allclose(cmd.times, DT * np.arange(1, 9))
    _respects_limits(layer, cmd, q)
    fast = q + np.outer(np.arange(1, 7), np.full(8, 0.25)) * np.array([1] * 7 + [0])  # 2.5 rad/s
    cmd = layer.check(fast, DT, q)
    assert cmd.time_scale > 1.0
    np.testing.assert_allclose(cmd.positions, fast)  # the same path, more time
    _respects_limits(layer, cmd, q)


def test_refusals_say_why():
    layer = _layer()
    q = load_profile("panda").home.copy()
    cases = [(np.full((4, 8), np.nan), "non-finite"), (np.zeros((4, 7)), "shape"), (q[None] + 0.5, "first point"),
             (np.vstack([q, q + np.array([3.0] * 7 + [0])]), "its time")]
    for chunk, msg in cases:
        with pytest.raises(Refused, match=msg):
            layer.check(chunk, DT, q)
    with pytest.raises(Refused, match="non-finite"):
        layer.check(q[None], DT, q * np.nan)


def test_fuzz_random_and_adversarial_chunks_never_leave_the_limits():
    """Issue 20's fuzz test: whatever arrives, a command that leaves the layer respects position,
    velocity and acceleration limits (or the chunk is refused)."""
    rng = np.random.default_rng(0)
    for name in available_profiles():
        layer = _layer(name)
        p = layer.profile
        sent = 0
        for i in range(1500):
            q = rng.uniform(p.lower, p.upper)
            dq = rng.uniform(-p.velocity, p.velocity) * rng.choice([0.0, 0.3, 1.0])
            h = int(rng.integers(1, 20))
            kind = i % 6
            if kind == 0:  # small steps near the state
                chunk = q + np.cumsum(rng.normal(0, 0.02, (h, p.dof)), axis=0)
            elif kind == 1:  # far outside the limits
                chunk = q + rng.normal(0, 5.0, (h, p.dof))
                chunk[0] = q + rng.uniform(-0.3, 0.3, p.dof)
            elif kind == 2:  # at or past the limits
                chunk = np.where(rng.random((h, p.dof)) < 0.5, p.lower - 0.1, p.upper + 0.1)
                chunk[0] = q
            elif kind == 3:  # oscillating at the largest first jump
                chunk = q + 0.29 * np.where(np.arange(h)[:, None] % 2 == 0, 1.0, -1.0) * np.ones(p.dof)
            elif kind == 4:  # huge or special values
                chunk = q + rng.choice([1e308, -1e308, np.inf, np.nan, 0.0], (h, p.dof))
            else:  # a random walk with random dt
                chunk = q + np.cumsum(rng.normal(0, 0.2, (h, p.dof)), axis=0)
            dt = float(rng.choice([DT, 0.01, 0.5]))
            try:
                cmd = layer.check(chunk, dt, q, dq)
            except Refused:
                continue
            _respects_limits(layer, cmd, q, dq)
            sent += 1
        assert sent > 300, (name, sent)  # the fuzz reaches the sending path, not only refusals


def test_the_state_machine_enable_hold_estop_and_watchdogs():
    layer = _layer(chunk_timeout_s=1.0, state_timeout_s=0.2, image_timeout_s=0.5)
    q = load_profile("panda").home.copy()
    chunk = q[None] + 0.001
    assert layer.state == "disabled"
    cmd, why = layer.command(chunk, DT, q)
    assert cmd is None and why.startswith("dry run") and layer.counters["dry_run"] == 1
    assert layer.enable(True)[0] and layer.command(chunk, DT, q)[0] is not None
    fresh = {"joint_states": 0.01, "image": 0.01, "chunk": 0.01}
    assert not layer.watch(fresh)
    assert layer.watch({**fresh, "joint_states": 0.25})  # a hold starts: send one
    assert layer.state == "holding" and "stale joint_states" in layer.hold_reasons
    assert layer.command(chunk, DT, q)[0] is None
    assert not layer.watch(fresh) and layer.commanding()  # resumes when the input is fresh again
    assert layer.watch({**fresh, "chunk": None}) and not layer.commanding()  # the policy died
    layer.watch(fresh)
    assert layer.hold() and layer.state == "holding"
    assert not layer.watch(fresh) and not layer.commanding()  # an operator hold needs an enable
    layer.enable(True)
    assert layer.commanding()
    assert layer.estop(True) and layer.state == "estopped"
    ok, msg = layer.enable(True)
    assert not ok and "e-stop" in msg and layer.command(chunk, DT, q)[0] is None
    layer.estop(False)
    assert layer.state == "disabled" and not layer.commanding()  # clearing does not move the arm
    assert layer.enable(True)[0] and layer.commanding()
    with pytest.raises(ValueError, match="max_time_scale"):
        SafetyConfig(max_time_scale=0.5).validate()


def test_forward_kinematics_matches_pybullet_and_the_workspace_box_cuts_chunks():
    """The URDF chain's tip = PyBullet's grasp point for random joint vectors; a chunk that takes
    the tip below the table is cut before that point, refused when its first point is there."""
    from vla_rl_ros.core.robot_profile import resolve_urdf, tip_function
    from vla_rl_ros.core.sim.world import TABLE_Z, PandaWorld, SimConfig

    prof = load_profile("panda")
    tip = tip_function(prof, resolve_urdf(prof.urdf))
    world = PandaWorld(SimConfig(cameras=(), renderer="tiny"))
    world.reset(seed=0)
    rng = np.random.default_rng(1)
    try:
        import pybullet as pb

        for _ in range(5):
            q = rng.uniform(prof.lower, prof.upper)
            for j, v in zip(range(7), q[:7]):
                pb.resetJointState(world.robot, j, v, physicsClientId=world.client)
            np.testing.assert_allclose(tip(q), world.ee_pose()[0] - np.array([0, 0, TABLE_Z]), atol=1e-5)
    finally:
        world.close()
    layer = SafetyLayer(prof, SafetyConfig(max_first_jump=1.0, max_time_scale=100.0))
    layer.tip = tip
    q = prof.home.copy()
    down = q + np.outer(np.arange(1, 9), np.array([0, 0.2, 0, 0.1, 0, -0.05, 0, 0]))  # reach forward and down
    heights = [tip(x)[2] for x in down]
    assert heights[0] > 0 > heights[-1], heights
    cmd = layer.check(down, DT, q)
    k = int(np.argmax(np.array(heights) < 0))
    assert cmd.truncated and len(cmd.positions) == k and all(tip(x)[2] >= 0 for x in cmd.positions)
    with pytest.raises(Refused, match="outside the workspace"):
        layer.check(down[k:], DT, down[k])


def test_tracking_monitor_tells_a_blocked_arm_from_one_that_follows():
    """Replanning every tick from the measured state bounds any position error to one step; the
    monitor compares path lengths over a window instead: a blocked arm trips it, a following arm
    (also moving back and forth, or slowed 4x by time-stretching) does not."""
    from vla_rl_ros.core.safety import TrackingMonitor

    def run(follow: float, wave: bool, seconds: float = 2.0):
        m, q, out = TrackingMonitor(0.15, 1.0), np.zeros(2), None
        for k in range(int(seconds * 10)):
            t = 0.1 * k
            step = 0.05 * (np.sign(np.sin(k)) if wave else 1.0) * np.array([1.0, 0.2])
            m.sent(t, q, [0.1], [q + step])
            q = q + follow * step  # what the arm achieved before the next tick
            out = m.check(t + 0.1, q) or out
        return out

    assert run(1.0, False) is None and run(1.0, True) is None and run(0.25, False) is None
    blocked = run(0.0, False)
    assert blocked is not None and blocked[0] == 0 and blocked[1] > 0.4
    assert run(0.0, False, seconds=0.8) is None  # not a whole window yet
    layer = _layer()
    q = layer.profile.home.copy()
    layer.enable(True)
    for k in range(15):  # a blocked arm under the layer: hold, and the reason stays until enabled
        t = 0.1 * k
        cmd, _ = layer.command(q[None] + 0.05 * np.array([1, 0, 0, 0, 0, 0, 0, 0]), DT, q)
        layer.tracking.sent(t, q[:7], cmd.times, cmd.positions[:, :7])
        if layer.track(t + 0.1, q):
            break
    assert not layer.commanding() and any(r.startswith("tracking error: panda_joint1") for r in layer.hold_reasons)
    layer.watch({"joint_states": 0.0, "image": 0.0, "chunk": 0.0})
    assert not layer.commanding()  # a watchdog does not clear it
    layer.enable(True)
    assert layer.commanding()


def test_move_to_start_is_slow_and_enable_is_refused_far_from_it():
    layer = _layer(start_tolerance=0.6, move_speed=0.2)
    p = layer.profile
    far = p.home + np.array([1.0, -0.5, 0.8, 0.3, 0, 0, 0, 0])
    ok, msg = layer.enable(True, far)
    assert not ok and "panda_joint1 is 1.00 rad from the start pose" in msg and "move_to_start" in msg
    assert not layer.enable(True, None)[0]
    cmd = layer.move_to(far, p.home, DT)
    np.testing.assert_allclose(cmd.positions[-1], np.clip(p.home, layer.lo, layer.hi))
    path = np.vstack([far[None], cmd.positions])
    times = np.concatenate([[0.0], cmd.times])
    vel = np.diff(path, axis=0) / np.diff(times)[:, None]
    assert np.all(np.abs(vel) <= 0.2 * layer.vmax * (1 + 1e-6))
    assert np.all(np.abs(cmd.velocities) <= 0.2 * layer.vmax * (1 + 1e-6)) and np.all(cmd.velocities[-1] == 0)
    assert layer.enable(True, cmd.positions[-1])[0]
