"""`vla-rl-ros improve` through the real ROS graph: two rounds, hot swap into the running policy node."""

import json
import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.timeout(700)  # above the inner subprocess timeouts
def test_improve_two_rounds_through_the_graph_hot_swaps_the_running_policy(tmp_path, domain_id):
    from tests.core.test_policy import instruction_table, small_model
    from vla_rl_ros.core.data import schema as S
    from vla_rl_ros.core.data.reader import iter_episode_frames
    from vla_rl_ros.core.policy.checkpoint import load_checkpoint, save_checkpoint
    from vla_rl_ros.core.robot import PANDA

    init = save_checkpoint(small_model(), tmp_path / "init", version=3, instructions=instruction_table())
    out = tmp_path / "improve"
    cmd = [sys.executable, "-m", "vla_rl_ros.cli", "improve", "--init", str(init), "--out", str(out),
           "--rounds", "2", "--episodes-per-round", "2", "--eval-episodes", "2", "--max-steps", "20",
           "--epochs", "2", "--real-time-factor", "2", "--sigma", "0.03", "--seed-repeat", "2", "--workers", "1", "--domain-id", str(domain_id)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads((out / "rounds.json").read_text())
    assert [x["version"] for x in rows] == [3, 4, 5]
    assert [x["collected_total"] for x in rows] == [0, 2, 4]
    assert all(x["eval"]["overall"][1] == 2 for x in rows)
    # every evaluation also sorts its failures by class (evaluate --diagnose)
    for x in rows:
        assert sum(x["failures"].values()) == 2 - x["eval"]["overall"][0], x
    assert "failures on the evaluation seeds" in r.stdout
    # each round is compared with the start on the same seeds (paired bootstrap, McNemar)
    for x in rows[1:]:
        o = x["paired_vs_start"]["overall"]
        assert o["n"] == 2 and o["ci"][0] <= o["diff"] <= o["ci"][1] and 0 <= o["p"] <= 1, o
        assert x["mu_shift_sigma"] >= 0
    assert "on the same 2 seeds" in r.stdout and "step of round 2" in r.stdout
    assert rows[1]["swap"]["event"] == "loaded" and rows[1]["swap"]["version"] == 4
    assert (out / "improve.png").stat().st_size > 1000
    # round 1 explored with v3, round 2 with v4 — swapped into the policy node that never restarted
    # (frames before an episode's first chunk hold still: chunk index -1, no policy version)
    eps = [d for _, d in iter_episode_frames(out / "data")]
    acted = [np.asarray(d[S.CHUNK_INDEX]) >= 0 for d in eps]
    assert all(a.mean() > 0.5 for a in acted)
    versions = [set(np.asarray(d[S.POLICY_VERSION])[a].tolist()) for d, a in zip(eps, acted)]
    assert versions[:2] == [{3}, {3}] and versions[2:] == [{4}, {4}], versions
    sig = np.concatenate([np.asarray(d[S.SIGMA])[a] for d, a in zip(eps, acted)])
    lp = np.concatenate([np.asarray(d[S.LOG_PROB])[a] for d, a in zip(eps, acted)])
    assert np.all(sig[:, :7] == np.float32(0.03)) and np.all(np.isfinite(lp)) and np.all(lp != 0)
    assert np.all(sig[:, 7] == 0)  # the gripper is not explored by default
    # every logged log-likelihood, row by row — lagging chunks (rl.chunk_index > 0) included —
    # equals scipy's truncated normal at the logged action, mean and σ (explored joints only)
    from scipy import stats

    act = np.concatenate([np.asarray(d[S.ACTION], np.float64)[a] for d, a in zip(eps, acted)])
    mean = np.concatenate([np.asarray(d[S.ACTION_MEAN], np.float64)[a] for d, a in zip(eps, acted)])
    lo, hi, sd = PANDA.lower[None], PANDA.upper[None], np.where(sig > 0, sig, 1.0).astype(np.float64)
    mean_c = np.clip(mean, lo, hi)
    ref = np.where(sig > 0, stats.truncnorm.logpdf(act, (lo - mean_c) / sd, (hi - mean_c) / sd, loc=mean_c, scale=sd), 0.0)
    np.testing.assert_allclose(lp, ref.sum(1), rtol=0, atol=2e-4)
    lagging = np.concatenate([np.asarray(d[S.CHUNK_INDEX])[a] > 0 for d, a in zip(eps, acted)])
    print(f"logged log-likelihoods checked row by row: {len(lp)} frames, {int(lagging.sum())} on lagging chunks")
    # and through train-rl's decisions: round 1 was explored by v3 = the init, so the init head at
    # each decision's anchor recomputes its logged log-likelihood (report of train-rl, every row)
    r1 = rows[1]["train"]
    assert r1["logged_logp_gap_max"] < 2e-4, r1
    # the logger also recorded the privileged object + grasp-point positions from /sim/object_poses
    # (sim_node's PoseArray), so train-rl's critic reads the simulator state through the graph too
    from vla_rl_ros.core.collect import ENV_STATE_NAMES

    env = [np.asarray(d[S.ENV_STATE]) for d in eps]
    assert all(e.shape == (len(d[S.STATE]), len(ENV_STATE_NAMES)) and np.all(np.isfinite(e)) for e, d in zip(env, eps))
    ee = np.concatenate(env)[:, -3:]
    assert np.ptp(ee, axis=0).max() > 0.01  # the grasp point moved with the arm
    assert all(x["train"]["critic"] == "privileged" for x in rows[1:]), [x["train"] for x in rows[1:]]
    # --seed-repeat 2: each round rolls one scene out twice (sim_node seed_repeat), and train-rl
    # used the leave-one-out group baseline
    from vla_rl_ros.core.data.reader import episode_summaries

    summaries = episode_summaries(out / "data")
    seeds = [row["meta"]["seed"] for row in summaries]
    # every episode records what the policy believed it was doing (its status when it ended)
    assert all(row["meta"].get("understood") is True and row["meta"].get("understood_as") == row["meta"]["policy_instruction"]
               for row in summaries), [row["meta"] for row in summaries]
    assert seeds[0] == seeds[1] and seeds[2] == seeds[3] and seeds[0] != seeds[2], seeds
    assert "baseline: group" in r.stdout
    load_checkpoint(rows[-1]["checkpoint"], joint_names=PANDA.joint_names)
    assert "noiseless success" in r.stdout
    graph_logs = (out / "graph_logs" / "policy_node.log")
    assert "swapped: v3 -> v4" in graph_logs.read_text()
