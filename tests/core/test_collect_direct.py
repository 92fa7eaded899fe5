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
