"""Direct (ROS-free) bulk collection: the logger's frame layout, DART labels, seeds like sim_node."""

from __future__ import annotations

import numpy as np
import pytest

from vla_rl_ros.core.collect import DirectCollectConfig, collect_direct, expert_episode
from vla_rl_ros.core.data import schema as S
from vla_rl_ros.core.data.reader import episode_frames, episode_summaries
from vla_rl_ros.core.policy.bc import load_episodes


@pytest.fixture(scope="module")
def noisy_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("direct") / "ds"
    cfg = DirectCollectConfig(seed=7, expert_noise=0.03, image_size=48, renderer="tiny")
    res = collect_direct(str(out), 2, cfg, workers=2)
    return out, res


def test_direct_collection_writes_loadable_episodes_with_clean_labels(noisy_dataset):
    out, res = noisy_dataset
    assert res["saved"] == 2 and res["failed"] == 0
    rows = episode_summaries(str(out))
    assert len(rows) == 2
    for ep in range(2):
        d = episode_frames(str(out), ep)
        n = len(d[S.STATE])
        assert n == int(rows[ep]["length"]) > 5
        assert d[S.image_key("front")].shape == (n, 48, 48, 3)
        assert bool(d[S.DONE][-1]) and not np.any(d[S.DONE][:-1])
        # executed = noisy, mean = the expert's clean intention: they differ by about the noise
        diff = np.abs(d[S.ACTION][:, :7] - d[S.ACTION_MEAN][:, :7])
        assert 0.005 < float(diff.mean()) < 0.06
        assert np.all(d[S.SIGMA] == 0) and np.all(d[S.CHUNK_INDEX] == 0)
        # privileged positions for the auxiliary grounding loss: 5 objects + grasp point
        env = d[S.ENV_STATE]
        assert env.shape == (n, 18) and np.all(np.isfinite(env))
        assert np.all(np.abs(env[:, 2:15:3]) < 0.2)  # objects rest near the table (z)
    from vla_rl_ros.core.sim.task_features import aux_targets

    eps, cams, joints = load_episodes([str(out)], progress=False, aux_targets=aux_targets)
    assert cams == ["front"] and len(joints) == 8
    assert all(e.label is not None for e in eps)  # auto -> imitate the clean mean
    assert all(e.aux is not None and e.aux.shape == (len(e.state), 22) for e in eps)
    eps, _, _ = load_episodes([str(out)], progress=False, label="action")
    assert all(e.label is None for e in eps)


def test_noise_free_episode_matches_itself_and_labels_equal_actions():
    from vla_rl_ros.core.sim.expert import ScriptedExpert
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    with PandaWorld(SimConfig(image_width=32, image_height=32, renderer="tiny")) as w:
        ex = ScriptedExpert(noise_std=0.0)
        a, task_a, meta_a = expert_episode(w, ex, seed=3, family="pick")
        b, task_b, meta_b = expert_episode(w, ex, seed=3, family="pick")
        ex.close()
    assert task_a == task_b and meta_a["success"] and len(a) == len(b)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa["action"], fb["action"])
        np.testing.assert_allclose(fa["rl.action_mean"], fa["action"], atol=1e-6)


class _ExpertAsPolicy:
    """A policy stand-in that answers with a second scripted expert's clean chunk: DAgger's
    labels must then equal what was executed."""

    version = 3

    def __init__(self, family):
        from vla_rl_ros.core.sim.expert import ScriptedExpert

        self.ex, self.started = ScriptedExpert(noise_std=0.0), False
        self.world = None

    def infer(self, obs):
        if not self.started:
            self.ex.reset(obs.instruction)
            self.started = True
        return self.ex.plan_chunk(obs.state, self.world.object_poses(), 8)


class _Frozen:
    """A policy stand-in that never moves: every label must pull the hand toward the task."""

    version = 1

    def infer(self, obs):
        return np.repeat(np.asarray(obs.state, dtype=np.float64)[None], 8, axis=0)


def test_dagger_labels_are_the_experts_action_at_the_state_the_policy_reached():
    from vla_rl_ros.core.collect import dagger_episode
    from vla_rl_ros.core.sim.expert import ScriptedExpert
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    with PandaWorld(SimConfig(image_width=32, image_height=32, renderer="tiny", max_steps=40)) as w:
        labeller = ScriptedExpert(noise_std=0.0)
        pol = _ExpertAsPolicy("pick")
        pol.world = w
        frames, _, meta = dagger_episode(w, pol, labeller, seed=3, family="pick", temporal_ensemble=False)
        assert meta["source"] == "dagger" and meta["policy_version"] == 3 and meta["success"]
        for f in frames:  # the policy is the expert: labels equal the executed targets
            np.testing.assert_allclose(f["rl.action_mean"], f["action"], atol=1e-6)
            assert np.all(f["rl.sigma"] == 0) and f["rl.log_prob"] == 0.0
        frames, _, meta = dagger_episode(w, _Frozen(), labeller, seed=3, family="pick")
        cube = w.object_poses()[w.task.spec.target][0]
        assert not meta["success"] and len(frames) == 40
        closer = 0
        for f in frames:  # the arm stays put; the expert's label moves the hand toward the cube
            q = f["observation.state"]
            np.testing.assert_allclose(f["action"], q, atol=2e-3)
            d_now = np.linalg.norm(labeller.fk(q)[:2] - cube[:2])
            d_label = np.linalg.norm(labeller.fk(f["rl.action_mean"])[:2] - cube[:2])
            closer += d_label < d_now - 0.005
        labeller.close()
        pol.ex.close()
    assert closer == len(frames)


def test_dagger_collection_with_the_shipped_checkpoint_is_imitated_from_the_expert_labels(tmp_path):
    import os

    ckpt = os.path.join(os.path.dirname(__file__), "..", "..", "models", "vla_bc_v4")
    with pytest.raises(ValueError, match="dagger"):
        DirectCollectConfig(mode="dagger").validate()
    with pytest.raises(ValueError, match="dagger"):
        DirectCollectConfig(mode="dagger", policy=ckpt, replan_every=2).validate()
    cfg = DirectCollectConfig(seed=11, family="push", policy=os.path.abspath(ckpt), mode="dagger", max_steps=30)
    res = collect_direct(str(tmp_path / "ds"), 1, cfg, workers=1)
    assert res["saved"] == 1 and res["failed"] == 0
    eps, _, _ = load_episodes([str(tmp_path / "ds")], progress=False, success_only=False)
    (ep,) = eps
    assert ep.label is not None and ep.label.shape == ep.action.shape and 10 < len(ep.label) <= 30
    # the policy (not the expert) drove: labels are the expert's answer, not the executed action
    assert float(np.abs(ep.label[:, :7] - ep.action[:, :7]).mean()) > 1e-3
