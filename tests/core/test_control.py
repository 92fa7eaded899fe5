"""Temporal ensembling of overlapping chunks (core/control.py: ChunkEnsembler) and its place in
the direct episode loop."""

from __future__ import annotations

import numpy as np
import pytest

from vla_rl_ros.core.control import ChunkEnsembler, ChunkScheduler


def _chunk(tick: int, horizon: int = 4, dof: int = 2, bias: float = 0.0) -> np.ndarray:
    """A plan whose point i predicts tick + i: value = that tick (+ bias), per joint."""
    return np.array([[tick + i + bias, -(tick + i + bias)] for i in range(horizon)], dtype=np.float64)[:, :dof]


def test_first_chunk_passes_through_and_overlaps_are_averaged_per_tick():
    ens = ChunkEnsembler(decay=0.0)
    a = _chunk(0, bias=1.0)
    np.testing.assert_array_equal(ens.add(a, 0), a)
    b = _chunk(1, bias=-1.0)
    out = ens.add(b, 1)
    # points 0..2 of b (ticks 1..3) are also predicted by a (its points 1..3): uniform mean
    np.testing.assert_allclose(out[:3], (a[1:] + b[:3]) / 2)
    np.testing.assert_allclose(out[3], b[3])  # tick 4: only b covers it
    # both plans agree on the tick's value apart from their biases, which cancel
    np.testing.assert_allclose(out[:3, 0], [1.0, 2.0, 3.0])


def test_weights_follow_the_decay_and_old_chunks_are_forgotten():
    ens = ChunkEnsembler(decay=0.5)
    ens.add(np.zeros((4, 1)), 0)
    out = ens.add(np.ones((4, 1)), 2)
    w_old, w_new = np.exp(-0.5 * 2), 1.0
    np.testing.assert_allclose(out[:2, 0], w_new / (w_old + w_new))
    np.testing.assert_allclose(out[2:, 0], 1.0)
    # the first chunk covers ticks 0..3: at tick 4 it no longer overlaps and is dropped
    out = ens.add(np.full((4, 1), 3.0), 4)
    assert len(ens.chunks) == 2
    np.testing.assert_allclose(out[:2, 0], (np.exp(-1.0) * 1.0 + 3.0) / (np.exp(-1.0) + 1.0))


def test_negative_decay_favours_older_plans_and_a_restarted_tick_resets():
    ens = ChunkEnsembler(decay=-1.0)
    ens.add(np.zeros((3, 1)), 5)
    out = ens.add(np.ones((3, 1)), 6)
    assert out[0, 0] < 0.5  # the older plan weighs e times more
    out = ens.add(np.full((3, 1), 7.0), 0)  # a new episode: ticks start again
    np.testing.assert_array_equal(out, np.full((3, 1), 7.0))
    assert len(ens.chunks) == 1
    ens.add(np.full((3, 1), 1.0), 1)
    out = ens.add(np.full((3, 1), 3.0), 1)  # a newer plan for the same tick replaces the older one
    np.testing.assert_allclose(out[:2, 0], (np.exp(1.0) * 7.0 + 3.0) / (np.exp(1.0) + 1.0))
    assert len(ens.chunks) == 2


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        ChunkEnsembler(decay=float("nan"))
    with pytest.raises(ValueError, match="horizon, dof"):
        ChunkEnsembler().add(np.zeros(4), 0)


def test_a_ensembled_plan_cancels_per_frame_noise_in_closed_loop():
    """A toy 1-D reach: each observation's plan targets the goal as read, with fresh noise. Executing
    the ensemble (through the same ChunkScheduler the controllers use) ends far closer to the
    goal than executing the newest plan alone: the point of ensembling."""
    rng = np.random.default_rng(0)
    goal, horizon, ticks = 1.0, 8, 60

    def run(ensemble: bool) -> float:
        errs = []
        for _ in range(30):
            pos = 0.0
            sched = ChunkScheduler(np.array([pos]))
            ens = ChunkEnsembler(0.0) if ensemble else None
            for k in range(ticks):
                seen = goal + rng.normal(0.0, 0.05)
                plan = np.full((horizon, 1), seen)  # go to where the goal appears to be
                if ens is not None:
                    plan = ens.add(plan, k)
                sched.offer(plan, k, k)
                pos = float(sched.target(k)[0][0])
            errs.append(abs(pos - goal))
        return float(np.mean(errs))

    plain, ensembled = run(False), run(True)
    assert ensembled < 0.5 * plain, (plain, ensembled)


def test_an_arm_that_does_not_follow_restarts_the_ensemble_within_max_lag():
    """A dry run or a held arm: the state stays put while each plan steps 0.1 rad a tick. The
    plain ensemble's first target runs ahead of the arm (the safety layer would refuse it);
    with max_lag it stays within the bound, and an arm that follows never triggers a restart."""
    plan = lambda q: q + 0.1 * np.arange(1, 9)[:, None] * np.ones((1, 2))  # noqa: E731
    q = np.zeros(2)
    plain, bounded = ChunkEnsembler(), ChunkEnsembler(max_lag=0.25)
    for t in range(8):
        far = plain.add(plan(q), t, q)
        near = bounded.add(plan(q), t, q)
    assert np.max(np.abs(far[0] - q)) > 0.4
    assert np.max(np.abs(near[0] - q)) <= 0.25 + 1e-9 and bounded.restarts >= 2
    follows = ChunkEnsembler(max_lag=0.25)
    for t in range(20):  # the arm reaches each target: the plans agree, no restart
        out = follows.add(plan(q), t, q)
        q = out[0]
    assert follows.restarts == 0
    with pytest.raises(ValueError, match="max_lag"):
        ChunkEnsembler(max_lag=-1.0)


def test_watchdog_flags_silence_under_fresh_input_but_not_a_deliberate_hold():
    from vla_rl_ros.core.control import CommandWatchdog

    dog = CommandWatchdog(timeout_s=2.0, fresh_s=1.0)
    assert dog.check(0.0) == {"stalled": False, "inputs_fresh": False, "since_command_s": None, "hold": None}
    for t in np.arange(0.0, 1.9, 0.1):  # observations, no command yet: silent for < 2 s
        dog.observed(float(t))
    assert not dog.check(1.9)["stalled"]
    dog.observed(2.5)
    st = dog.check(2.6)
    assert st["stalled"] and st["since_command_s"] == pytest.approx(2.6)
    assert not dog.check(2.6, hold="no instruction")["stalled"]  # holding on purpose
    dog.commanded(2.7)
    assert not dog.check(2.8)["stalled"]
    dog.observed(4.6)
    assert dog.check(4.8)["stalled"]  # 2.1 s since the last chunk, input 0.2 s old
    assert not dog.check(6.0)["stalled"]  # inputs stopped too (1.4 s old): not the policy's silence
    with pytest.raises(ValueError):
        CommandWatchdog(0.0, 1.0)
