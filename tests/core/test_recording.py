import numpy as np

from vla_rl_ros.core.recording import ChunkRecord, EpisodeAssembler, parse_reference


def _img(v):
    return np.full((4, 4, 3), v, dtype=np.uint8)


def _feed_tick(asm, stamp, k, ref="hold", reward=0.1, done=False, order=0):
    pieces = [
        lambda: asm.add_state(stamp, np.full(8, k, dtype=np.float32)),
        lambda: asm.add_image("front", stamp, _img(k)),
        lambda: asm.add_reference(stamp, np.full(8, k + 0.5), ref),
        lambda: asm.add_reward(stamp, reward, done, done),
    ]
    if order:
        pieces = pieces[::-1]
    for f in pieces:
        f()


def test_parse_reference():
    assert parse_reference("123:4") == (123, 4)
    assert parse_reference("123:hold") == (123, -1)
    assert parse_reference("hold") == (0, -1)
    assert parse_reference("garbage") == (0, -1)


def test_frames_in_stamp_order_regardless_of_arrival_order():
    asm = EpisodeAssembler(["front"], 8)
    asm.start(3, "pick up the red cube", {"seed": 7}, start_ns=50)
    for k, stamp in reversed(list(enumerate([100, 200, 300]))):
        _feed_tick(asm, stamp, k, done=(k == 2), order=k % 2)
    asm.add_state(400, np.zeros(8))  # the observation after the last step: not a frame
    asm.add_image("front", 400, _img(9))
    ep = asm.end({"success": True})
    assert ep.episode == 3 and ep.task == "pick up the red cube"
    assert [int(f["observation.state"][0]) for f in ep.frames] == [0, 1, 2]
    assert ep.dropped == 0
    assert [f["next.done"] for f in ep.frames] == [False, False, True]
    assert ep.meta == {"seed": 7, "success": True, "dropped_frames": 0}
    assert not asm.active


def test_incomplete_tick_is_counted_dropped_not_invented():
    asm = EpisodeAssembler(["front"], 8)
    asm.start(0, "t")
    _feed_tick(asm, 1, 0)
    asm.add_state(2, np.ones(8))  # image of tick 1 lost
    asm.add_reference(2, np.ones(8), "hold")
    asm.add_reward(2, 0.0, False, False)
    _feed_tick(asm, 3, 2, done=True)
    ep = asm.end()
    assert len(ep.frames) == 2 and ep.dropped == 1


def test_mean_chunk_sigma_and_log_prob():
    asm = EpisodeAssembler(["front"], 8)
    asm.start(0, "t")
    mean = np.zeros((4, 8))
    sigma = np.full((4, 8), 0.5)
    asm.add_mean_chunk(50, ChunkRecord(mean, policy_version=4, sigma=sigma))
    asm.add_executed_chunk(50, ChunkRecord(mean + 0.25, policy_version=4))
    _feed_tick(asm, 100, 0, ref="50:1", done=True)
    f = asm.end().frames[0]
    assert f["rl.chunk_id"] == 50 and f["rl.chunk_index"] == 1 and f["rl.policy_version"] == 4
    a = f["action"].astype(np.float64)
    expected = float(np.sum(-0.5 * (a / 0.5) ** 2 - np.log(0.5) - 0.5 * np.log(2 * np.pi)))
    assert abs(f["rl.log_prob"] - expected) < 1e-4
    np.testing.assert_allclose(f["rl.sigma"], 0.5)


def test_deterministic_chunk_has_zero_sigma_and_mean_from_chunk():
    asm = EpisodeAssembler(["front"], 8)
    asm.start(0, "t")
    chunk = np.arange(16, dtype=np.float64).reshape(2, 8)
    asm.add_mean_chunk(9, ChunkRecord(chunk))
    _feed_tick(asm, 10, 0, ref="9:1", done=True)
    f = asm.end().frames[0]
    np.testing.assert_allclose(f["rl.action_mean"], chunk[1])
    assert f["rl.log_prob"] == 0.0 and not f["rl.sigma"].any()


def test_episodes_are_delimited_by_stamps_not_by_event_arrival():
    asm = EpisodeAssembler(["front"], 8)
    _feed_tick(asm, 1, 0)  # before any episode: only kept until an episode claims/skips it
    assert asm.end() is None
    asm.start(0, "first", start_ns=10)
    _feed_tick(asm, 10, 0)
    _feed_tick(asm, 20, 1, done=True)
    # the next episode's first observation overtakes its start event (and our end handling)
    _feed_tick(asm, 30, 7)
    asm.start(1, "second", start_ns=25)
    _feed_tick(asm, 40, 8, done=True)
    first = asm.end(episode=0)
    assert [int(f["observation.state"][0]) for f in first.frames] == [0, 1]
    second = asm.end(episode=1)
    assert second.task == "second"
    assert [int(f["observation.state"][0]) for f in second.frames] == [7, 8]
    assert not asm.active and not asm.pending


def test_environment_state_is_recorded_and_required_when_asked():
    """A simulation logger (env_size > 0) records observation.environment_state per frame; a tick
    whose object poses never arrived is dropped, not saved without them; a wrong size is refused."""
    import pytest

    from vla_rl_ros.core.collect import ENV_STATE_NAMES, environment_state_from_poses
    from vla_rl_ros.core.sim.tasks import OBJECTS

    poses = {n: (np.array([i, i + 0.1, i + 0.2]), np.array([0, 0, 0, 1.0])) for i, n in enumerate(OBJECTS + ("ee",))}
    env = environment_state_from_poses(poses)
    assert env.shape == (len(ENV_STATE_NAMES),) and env[ENV_STATE_NAMES.index("ee.y")] == np.float32(len(OBJECTS) + 0.1)
    with pytest.raises(ValueError, match="lack"):
        environment_state_from_poses({k: v for k, v in poses.items() if k != "ee"})
    with pytest.raises(ValueError, match="NaN"):
        environment_state_from_poses({**poses, "ee": (np.array([np.nan, 0, 0]), None)})

    asm = EpisodeAssembler(["front"], 8, env_size=len(env))
    with pytest.raises(ValueError, match="expected"):
        asm.add_env(1, env[:3])
    asm.start(0, "t")
    _feed_tick(asm, 1, 0)
    asm.add_env(1, env)
    _feed_tick(asm, 2, 1)  # its poses were lost
    _feed_tick(asm, 3, 2, done=True)
    asm.add_env(3, env + 1)
    ep = asm.end()
    assert len(ep.frames) == 2 and ep.dropped == 1
    np.testing.assert_array_equal(ep.frames[1]["observation.environment_state"], env + 1)
