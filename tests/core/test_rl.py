"""Exploration density/sampler and the likelihood-ratio estimator against analytic answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

from vla_rl_ros.core.rl.bandit import NO_CLIP, TruncatedChunkBandit, clip_bias, estimate
from vla_rl_ros.core.rl.config import RLConfig
from vla_rl_ros.core.rl.exploration import (
    ExplorationConfig, Explorer, chain_conditionals, chain_logpdf, chain_sample, truncnorm_logpdf,
    truncnorm_logpdf_torch, truncnorm_sample,
)
from vla_rl_ros.core.rl.objective import chunk_log_prob, dim_log_prob, policy_loss
from vla_rl_ros.core.robot import PANDA


@pytest.mark.parametrize("mu", [0.0, 0.9, 1.2, -1.5])  # inside, near, beyond the limit
def test_truncated_density_integrates_to_one_and_matches_scipy(mu):
    lo, hi, s = -1.0, 1.0, 0.3
    mu_c = np.clip(mu, lo, hi)
    x = np.linspace(lo, hi, 20001)
    p = np.exp(truncnorm_logpdf(x, mu_c, s, lo, hi))
    assert abs(np.trapezoid(p, x) - 1.0) < 1e-4
    ref = stats.truncnorm.logpdf(x, (lo - mu_c) / s, (hi - mu_c) / s, loc=mu_c, scale=s)
    np.testing.assert_allclose(truncnorm_logpdf(x, mu_c, s, lo, hi), ref, atol=1e-8)
    t = truncnorm_logpdf_torch(*(torch.as_tensor(v, dtype=torch.float64) for v in np.broadcast_arrays(x, mu_c, s, lo, hi)))
    np.testing.assert_allclose(t.numpy(), ref, atol=1e-8)
    assert truncnorm_logpdf(hi + 0.01, mu_c, s, lo, hi) == -np.inf


def test_sampler_draws_from_the_logged_density():
    rng = np.random.default_rng(0)
    lo, hi, mu, s = -1.0, 1.0, 0.85, 0.3  # a quarter of the Gaussian mass lies beyond hi
    x = truncnorm_sample(np.full(40000, mu), np.full(40000, s), lo, hi, rng)
    assert x.min() >= lo and x.max() <= hi
    ks = stats.kstest(x, stats.truncnorm((lo - mu) / s, (hi - mu) / s, loc=mu, scale=s).cdf)
    assert ks.pvalue > 1e-3
    # clipping would instead pile mass on the limit: the sampler never does
    assert np.mean(x == hi) == 0.0


def test_explorer_modes_limits_seed_and_bad_input():
    lo, hi = PANDA.lower, PANDA.upper
    mu = np.tile((lo + hi) / 2, (8, 1))
    mu[0, 0] = hi[0]  # at the limit
    cfg = ExplorationConfig(sigma=[0.05], token_scale=[1.0, 2.0], schedule=[1.0, 0.5])
    a1, s1 = Explorer(lo, hi, cfg, seed=3).perturb(mu)
    a2, _ = Explorer(lo, hi, cfg, seed=3).perturb(mu)
    np.testing.assert_array_equal(a1, a2)
    assert np.all(a1 >= lo) and np.all(a1 <= hi) and not np.allclose(a1, mu)
    assert s1.shape == (8, 8) and s1[1, 0] == pytest.approx(2 * s1[0, 0])
    # the gripper is not explored by default (σ 0): it executes μ and stays out of the likelihood
    assert np.all(s1[:, 7] == 0) and np.array_equal(a1[:, 7], mu[:, 7])
    from vla_rl_ros.core.recording import step_log_prob

    lp = step_log_prob(a1[0], mu[0], s1[0], lo, hi)
    assert np.isfinite(lp) and lp == pytest.approx(step_log_prob(a1[0, :7], mu[0, :7], s1[0, :7], lo[:7], hi[:7]))
    g = ExplorationConfig(sigma=[0.05], gripper_sigma=0.004)
    ag, sg = Explorer(lo, hi, g, seed=3).perturb(mu)
    assert sg[0, 7] == pytest.approx(0.004) and not np.array_equal(ag[:, 7], mu[:, 7])
    _, s_late = Explorer(lo, hi, cfg, seed=3, round_index=5).perturb(mu)
    assert s_late[0, 0] == pytest.approx(0.5 * s1[0, 0])
    d, sd = Explorer(lo, hi, cfg, mode="deploy").perturb(mu)
    assert sd is None and np.array_equal(d, mu)
    bad = mu.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Explorer(lo, hi, cfg).perturb(bad)
    with pytest.raises(ValueError, match=r"\(H, 8\)"):
        Explorer(lo, hi, cfg).perturb(mu[:, :7])
    with pytest.raises(ValueError, match="sigma"):
        ExplorationConfig(sigma=[0.0]).sigma_matrix(8, 8)


def test_chunk_log_prob_counts_only_executed_tokens():
    mu = torch.zeros(1, 4, 2)
    a = torch.ones(1, 4, 2)
    s = torch.ones(1, 4, 2)
    a[0, 2:] = float("nan")  # padding of unexecuted tokens must not leak
    lp = chunk_log_prob(mu, a, s, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    expect = 4 * stats.norm.logpdf(1.0)
    assert float(lp) == pytest.approx(expect, abs=1e-5)


def test_per_dimension_ratio_matches_the_chunk_gradient_at_the_behaviour_policy():
    """--ratio dim: the factors sum to the chunk log-likelihood, the surrogate's gradient at the
    behaviour policy points the same way as the chunk ratio's (the policy gradient), and the clip
    binds per factor: a shift that saturates the chunk clip leaves most factors unclipped."""
    g = torch.Generator().manual_seed(0)
    B, H, D = 64, 4, 7
    mu_b = torch.randn(B, H, D, generator=g)
    sig = torch.full((B, H, D), 0.1)
    sig[..., -1] = 0.0  # a dimension that is not explored stays out of both
    acts = mu_b + sig * torch.randn(B, H, D, generator=g)
    mask = torch.ones(B, H)
    mask[:, 2:] = 0.0
    adv = torch.randn(B, generator=g)
    lp_dim, keep = dim_log_prob(mu_b, acts, sig, mask)
    assert int(keep.sum()) == B * 2 * (D - 1)
    torch.testing.assert_close(lp_dim.sum(dim=(-1, -2)), chunk_log_prob(mu_b, acts, sig, mask))
    lpb_chunk, lpb_dim = lp_dim.sum(dim=(-1, -2)), lp_dim

    def grad(kind, mu0):
        mu = mu0.clone().requires_grad_(True)
        if kind == "chunk":
            loss, st = policy_loss(chunk_log_prob(mu, acts, sig, mask), lpb_chunk, adv, clip=0.2)
        else:
            lp, k = dim_log_prob(mu, acts, sig, mask)
            loss, st = policy_loss(lp[k], lpb_dim[k], adv[:, None, None].expand_as(lp)[k], clip=0.2)
        loss.backward()
        return mu.grad.flatten(), st

    gc, _ = grad("chunk", mu_b)
    gd, _ = grad("dim", mu_b)
    cos = float(gc @ gd / (gc.norm() * gd.norm()))
    assert cos > 0.999, cos
    shifted = mu_b + 0.005 * torch.sign(acts - mu_b)  # σ/20 toward every executed action
    _, st_c = grad("chunk", shifted)
    _, st_d = grad("dim", shifted)
    assert st_c.clip_fraction > 0.5 and st_d.clip_fraction < 0.05, (st_c.clip_fraction, st_d.clip_fraction)


def test_policy_loss_clipping_and_ess():
    lp_b = torch.zeros(4)
    lp_new = torch.log(torch.tensor([1.0, 1.5, 0.5, 1.1]))
    adv = torch.tensor([1.0, 1.0, -1.0, 1.0])
    loss, st = policy_loss(lp_new, lp_b, adv, clip=0.2)
    # min(rA, clip(r)A): 1, 1.2, -0.8 (pessimistic for A<0 with r<0.8), 1.1
    assert float(loss) == pytest.approx(-(1 + 1.2 - 0.8 + 1.1) / 4, abs=1e-6)
    assert st.clip_fraction == pytest.approx(0.5)
    r = np.array([1.0, 1.5, 0.5, 1.1])
    assert st.ess == pytest.approx(r.sum() ** 2 / (4 * (r**2).sum()), rel=1e-5)


def test_estimator_is_unbiased_as_train_rl_runs_it_and_a_5pct_bias_would_fail():
    """The gradient of train-rl's own minibatch loss (objective.rl_objective with RLConfig()'s
    settings: chunk ratio over executed tokens — single, multi-token and lagging chunks —,
    truncated density near the joint limits, the clip 0.2, the KL to the initial head) against
    the exact gradient of a bandit with joint limits (core/rl/bandit.py). At the behaviour (where
    every train-rl update starts) it must be unbiased; the test's power is explicit: a bias of
    5% moves the projection statistic by ``power_z_5pct`` standard errors, and an estimate
    scaled ×1.05 is flagged."""
    cfg = RLConfig()
    b = TruncatedChunkBandit()
    # truncation matters on these data: half the behaviour means lie within 1.5 σ of a limit
    mu_b = np.einsum("idk,jk->jid", b.w_b, b.o)
    near = np.minimum(mu_b - b.lo, b.hi - mu_b) / b.sigma
    assert (near < 1.5).mean() > 0.4 and near.min() > 0, near.min()
    res = estimate(b, b.w_b, cfg, batches=40, n=25000)
    print(f"\nprojection s = {res['projection']:.4f} ± {res['projection_se']:.4f} (z {res['projection_z']:+.2f}), "
          f"5% bias would be z {res['power_z_5pct']:.1f}; max |z| {res['max_abs_z']:.2f}; "
          f"min |∇J|/se {res['min_entry_snr']:.1f}")
    assert abs(res["projection_z"]) < 4.0, res["projection_z"]
    assert res["max_abs_z"] < 4.5, res["max_abs_z"]
    # non-degenerate: every executed entry's gradient is far from 0; the never-executed token's
    # rows are 0 in the estimate (masked; the KL to the initial head is flat at W_b) as analytically
    live = res["analytic"] != 0
    assert live.sum() == 3 * 2 * 3 and res["min_entry_snr"] > 5.0, res["min_entry_snr"]
    assert res["dead_entries_max_abs"] < 1e-9, res["dead_entries_max_abs"]
    # power: a 5% bias is >= 8 standard errors away; an estimate biased x1.05 fails the same bound
    assert res["power_z_5pct"] > 8.0, res["power_z_5pct"]
    biased = estimate(b, b.w_b, cfg, batches=40, n=25000, bias=1.05)
    assert abs(biased["projection_z"]) > 4.0, biased["projection_z"]


def test_clip_bias_is_measured_and_naive_estimators_are_worse():
    """Off the behaviour, the unclipped importance-weighted estimator is unbiased, the clip is not:
    its bias is measured (and printed by ``python -m vla_rl_ros.core.rl.bandit``); ignoring the
    behaviour likelihood is biased; putting unexecuted tokens into the ratio adds variance."""
    import dataclasses

    cfg = RLConfig()
    b = TruncatedChunkBandit()
    cb = clip_bias(b, cfg, batches=30, n=20000)
    un, cl = cb["unclipped"], cb["clipped"]
    print(f"\nclip {cfg.clip}: projection {cl['projection']:.3f} ± {cl['projection_se']:.3f}, "
          f"relative bias {cl['rel_bias']:.3f} (unclipped {un['rel_bias']:.3f})")
    assert abs(un["projection_z"]) < 4.0 and un["max_abs_z"] < 4.5, un
    assert abs(cl["projection_z"]) > 10.0 and cl["projection"] < 1.0  # the clip shrinks the step
    off = dataclasses.replace(cfg, clip=NO_CLIP, kl_coef=0.0)
    ok = estimate(b, b.w_eval, off, batches=20, n=10000)
    no_b = estimate(b, b.w_eval, off, batches=20, n=10000, kind="no_behaviour")
    all_t = estimate(b, b.w_eval, off, batches=20, n=10000, kind="all_tokens")
    assert no_b["max_abs_z"] > 6.0 and no_b["rel_bias"] > 2 * ok["rel_bias"], (no_b["max_abs_z"], ok["rel_bias"])
    assert all_t["mse"] > 1.5 * ok["mse"], (all_t["mse"], ok["mse"])


def test_coherent_chain_sampler_draws_from_its_logged_density_with_and_without_limits():
    """AR(1) noise over a chunk's tokens (exploration ``rho``): without limits the chain is the
    Gaussian with covariance σ² ρ^|i−j| (log-density equal to scipy's multivariate normal); with
    limits each token, transformed by its logged conditional CDF, is uniform (probability
    integral transform) — the sampler draws exactly from the density the logger records."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(1)
    rho, H, s = 0.8, 4, 0.3
    wide_lo, wide_hi = np.array([-1e3]), np.array([1e3])
    mu = np.zeros((20000, H, 1))
    sig = np.full_like(mu, s)
    a = chain_sample(mu, sig, wide_lo, wide_hi, rho, rng)
    assert np.corrcoef(a[:, 0, 0], a[:, 1, 0])[0, 1] == pytest.approx(rho, abs=0.02)
    assert np.corrcoef(a[:, 0, 0], a[:, 3, 0])[0, 1] == pytest.approx(rho**3, abs=0.02)
    cov = s * s * rho ** np.abs(np.subtract.outer(np.arange(H), np.arange(H)))
    ref = multivariate_normal(np.zeros(H), cov).logpdf(a[:500, :, 0])
    np.testing.assert_allclose(chain_logpdf(a[:500], mu[:500], sig[:500], wide_lo, wide_hi, rho).sum((1, 2)), ref,
                               atol=1e-9)
    # limits that bind: μ near the upper limit, the chain pushed against it
    lo, hi = np.array([-1.0]), np.array([1.0])
    mu = np.full((20000, H, 1), 0.85)
    b = chain_sample(mu, sig, lo, hi, rho, rng)
    assert b.min() >= lo[0] and b.max() <= hi[0] and (b > 0.95).mean() > 0.05
    m, sc = chain_conditionals(b, mu, sig, lo, hi, rho)
    for i in range(H):
        u = stats.truncnorm.cdf(b[:, i, 0], (lo[0] - m[:, i, 0]) / sc[:, i, 0], (hi[0] - m[:, i, 0]) / sc[:, i, 0],
                                loc=m[:, i, 0], scale=sc[:, i, 0])
        assert stats.kstest(u, "uniform").pvalue > 1e-3, i
    # ρ = 0 is the white sampler, uniform for uniform; ρ must stay below 1 (a degenerate density)
    np.testing.assert_array_equal(chain_sample(mu[:5], sig[:5], lo, hi, 0.0, np.random.default_rng(2)),
                                  truncnorm_sample(mu[:5], sig[:5], lo, hi, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="rho"):
        chain_sample(mu[:5], sig[:5], lo, hi, 1.0, rng)
    with pytest.raises(ValueError, match="rho"):
        ExplorationConfig(rho=1.0).sigma_matrix(4, 8)


def test_explorer_logs_each_token_given_the_previous_one():
    lo, hi = PANDA.lower, PANDA.upper
    mu = np.tile((lo + hi) / 2, (8, 1))
    ex = Explorer(lo, hi, ExplorationConfig(sigma=[0.05], rho=0.9), seed=4)
    a, sig = ex.perturb(mu)
    lp = ex.token_log_probs(a, mu, sig)
    assert lp.shape == (8,) and np.all(np.isfinite(lp))
    np.testing.assert_allclose(lp, chain_logpdf(a, mu, sig, lo, hi, 0.9).sum(-1))
    # coherent: consecutive tokens' noise is strongly correlated; the gripper (σ 0) executes μ
    e = (a - mu)[:, :7] / 0.05
    assert np.mean(e[1:] * e[:-1]) > 0.4 * np.mean(e * e)
    assert np.array_equal(a[:, 7], mu[:, 7])
    # and the torch density the update uses agrees, chain starting at the first executed token
    from vla_rl_ros.core.rl.objective import chunk_log_prob

    t = lambda x: torch.as_tensor(np.asarray(x)[None], dtype=torch.float64)  # noqa: E731
    mask = torch.tensor([[1.0, 1, 1, 0, 0, 0, 0, 0]])
    got = chunk_log_prob(t(mu), t(a), t(sig), mask, t(lo)[0], t(hi)[0], torch.tensor([0.9]))
    assert float(got) == pytest.approx(float(lp[:3].sum()), abs=1e-6)


def test_coherent_noise_estimator_is_unbiased_and_a_white_likelihood_is_not():
    """The analytic bandit check with coherent (AR(1), ρ 0.8) noise over the chunk: train-rl's loss
    with the chain's conditional likelihood is unbiased at the behaviour (5% bias ≥ 8 standard
    errors away); scoring the same data as white noise is biased (many standard errors off)."""
    import dataclasses

    cfg = RLConfig()
    b = TruncatedChunkBandit(rho=0.8, limits="wide")
    res = estimate(b, b.w_b, cfg, batches=20, n=15000)
    assert abs(res["projection_z"]) < 4.0 and res["max_abs_z"] < 4.5, res
    assert res["power_z_5pct"] > 8.0, res["power_z_5pct"]
    off = dataclasses.replace(cfg, clip=NO_CLIP, kl_coef=0.0)
    ok = estimate(b, b.w_eval, off, batches=10, n=8000)
    white = estimate(b, b.w_eval, off, batches=10, n=8000, kind="white_likelihood")
    assert ok["max_abs_z"] < 4.5, ok["max_abs_z"]
    assert white["max_abs_z"] > 10.0 and white["rel_bias"] > 5 * ok["rel_bias"], (white["rel_bias"], ok["rel_bias"])


def test_explored_rollouts_train_rl_end_to_end(tmp_path):
    """Direct explored rollouts of a small policy -> train-rl -> a loadable v+1 checkpoint. The
    behaviour log-likelihood recomputed by the trainer from the *initial* head equals the logged
    one (ratio 1 at the start: the logged μ, σ, a and log π are mutually consistent)."""
    import json

    import numpy as np

    from tests.core.test_policy import small_model
    from vla_rl_ros.core.collect import DirectCollectConfig, collect_direct
    from vla_rl_ros.core.data import schema as S
    from vla_rl_ros.core.data.reader import iter_episode_frames
    from vla_rl_ros.core.policy.checkpoint import load_checkpoint, save_checkpoint
    from vla_rl_ros.core.rl.samples import decisions_from_episode
    from vla_rl_ros.core.rl.trainer import train_rl
    from vla_rl_ros.core.sim.task_features import episode_privileged_features as priv
    from vla_rl_ros.core.robot import PANDA

    init = save_checkpoint(small_model(), tmp_path / "init", version=4)
    cfg = DirectCollectConfig(seed=50, image_size=32, max_steps=12, policy=str(init), sigma=(0.05,),
                              explore_seed=1, seed_repeat=2)
    res = collect_direct(str(tmp_path / "ds"), 4, cfg, workers=1)
    assert res["saved"] == 4 and not res["failed"]
    eps = list(iter_episode_frames(tmp_path / "ds"))
    d = eps[0][1]
    # seed_repeat: episodes 0 and 1 start from the same scene and explore with different noise
    d1 = eps[1][1]
    np.testing.assert_array_equal(d[S.STATE][0], d1[S.STATE][0])
    np.testing.assert_array_equal(d[S.image_key("front")][0], d1[S.image_key("front")][0])
    assert not np.allclose(d[S.ACTION][0], d1[S.ACTION][0])
    assert np.all(np.asarray(d[S.POLICY_VERSION]) == 4)
    assert np.all(np.asarray(d[S.SIGMA])[:, :7] == np.float32(0.05))
    assert not np.allclose(d[S.ACTION], d[S.ACTION_MEAN])  # explored
    rows = decisions_from_episode(d, 4, ("front",), 0.9)
    assert len(rows) == len(d[S.ACTION]) and all(r["mask"].sum() == 1 for r in rows)  # replan every tick
    # a lagging policy: chunk executed from token 1 -> anchor is one frame earlier, mask on token 1
    lag = dict(d)
    lag[S.CHUNK_INDEX] = np.array([0] + [1] * (len(d[S.ACTION]) - 1))
    lag[S.CHUNK_ID] = np.array([0] + list(range(len(d[S.ACTION]) - 1)))
    rows_lag = decisions_from_episode(lag, 4, ("front",), 0.9)
    # frames 0, 1 execute tokens 0, 1 of chunk 0; frame t >= 2 executes token 1 of chunk t-1,
    # computed from the observation of frame t-1
    assert rows_lag[0]["mask"].tolist() == [1, 1, 0, 0] and rows_lag[1]["mask"].tolist() == [0, 1, 0, 0]
    np.testing.assert_array_equal(rows_lag[1]["state"], d[S.STATE][1])
    np.testing.assert_array_equal(rows_lag[2]["state"], d[S.STATE][2])
    np.testing.assert_array_equal(rows_lag[1]["actions"][1], d[S.ACTION][2])

    out = train_rl(RLConfig(data=[str(tmp_path / "ds")], init=str(init), out=str(tmp_path / "rl"), epochs=2,
                            batch_size=8, value_steps=20, threads=1), progress=False, privileged=priv)
    assert out["version"] == 5 and out["decisions"] == sum(len(e[1][S.ACTION]) for e in eps)
    assert out["init_log_ratio_median"] < 1e-3, out["init_log_ratio_median"]
    assert out["group_fraction"] == 1.0 and out["baseline"].startswith("group")  # every scene twice
    assert out["critic"] == "privileged" and out["advantage"] == "mc"  # direct collection logs the sim state
    assert out["onnx_parity_max_abs"] <= 1e-4
    h = out["history"]
    assert len(h) >= 1 and {"ess", "clip_fraction", "kl_behaviour", "value_loss"} <= set(h[0])
    assert 0 < h[0]["ess"] <= 1.0
    model, conf = load_checkpoint(out["checkpoint"], joint_names=PANDA.joint_names)
    assert conf["version"] == 5 and (tmp_path / "rl" / "rl.png").stat().st_size > 1000
    assert json.loads((tmp_path / "rl" / "history.json").read_text()) == h
    # per-factor ratios on the same data: the logged μ/σ reproduce the logged log-likelihood
    dim = train_rl(RLConfig(data=[str(tmp_path / "ds")], init=str(init), out=str(tmp_path / "rl_dim"), epochs=1,
                            batch_size=8, value_steps=20, threads=1, ratio="dim", export_onnx=False), progress=False)
    assert dim["args"]["ratio"] == "dim" and 0 < dim["history"][0]["ess"] <= 1.0
    with pytest.raises(ValueError, match="ratio"):
        train_rl(RLConfig(data=[str(tmp_path / "ds")], init=str(init), out=str(tmp_path / "x"), ratio="token",
                          value_steps=1, threads=1), progress=False)
    # chunks as the decision unit with coherent noise: k = 3 tokens open loop, ρ 0.9; each decision
    # holds 3 executed tokens and the trainer's likelihood reproduces the logged one (ratio 1)
    ck = DirectCollectConfig(seed=60, image_size=32, max_steps=12, policy=str(init), sigma=(0.05,),
                             explore_seed=2, replan_every=3, rho=0.9)
    assert collect_direct(str(tmp_path / "ds_chunk"), 2, ck, workers=1)["saved"] == 2
    dc = next(iter(iter_episode_frames(tmp_path / "ds_chunk")))[1]
    rows_c = decisions_from_episode(dc, 4, ("front",), 0.9)
    assert [int(r["mask"].sum()) for r in rows_c] == [3] * (len(dc[S.ACTION]) // 3) + [len(dc[S.ACTION]) % 3] * (
        len(dc[S.ACTION]) % 3 > 0)
    chunked = train_rl(RLConfig(data=[str(tmp_path / "ds_chunk")], init=str(init), out=str(tmp_path / "rl_chunk"),
                                epochs=1, batch_size=8, value_steps=20, threads=1, export_onnx=False), progress=False)
    assert chunked["init_log_ratio_max"] < 1e-3 and chunked["logged_logp_gap_max"] < 1e-3, chunked
    # a selection of the dataset's episodes (train-rl --episodes): only those are loaded
    sub = train_rl(RLConfig(data=[str(tmp_path / "ds")], episode_ids="1:3", init=str(init), out=str(tmp_path / "rl_sub"),
                            epochs=1, batch_size=8, value_steps=20, threads=1, export_onnx=False), progress=False)
    assert sub["episodes"] == 2 and sub["decisions"] == sum(len(e[1][S.ACTION]) for e in eps[1:3])
    for bad in ("2:9", "x"):
        with pytest.raises(ValueError, match="episode"):
            train_rl(RLConfig(data=[str(tmp_path / "ds")], episode_ids=bad, init=str(init), out=str(tmp_path / "x"),
                              value_steps=1, threads=1), progress=False)


def test_group_baseline_is_leave_one_out_over_the_same_scene():
    import numpy as np

    from vla_rl_ros.core.rl.advantages import group_baseline
    from vla_rl_ros.core.rl.samples import returns

    gamma = 0.9
    ep_returns = {0: (returns(np.array([0.1, 0.2, 0.3]), True, gamma), True),
                  1: (returns(np.array([0.0] * 5), False, gamma), False),
                  2: (returns(np.array([0.5, 0.5]), False, gamma), False),
                  3: (returns(np.array([0.4] * 4), False, gamma), False)}
    groups = {0: ("d", 7, 1), 1: ("d", 7, 1), 2: ("d", 7, 1), 3: ("d", 8, 1)}  # episode 3 alone
    t = np.array([0, 2, 4, 1, 0])
    episode = np.array([0, 0, 1, 2, 3])
    b, ok = group_baseline(t, episode, ep_returns, groups, gamma)
    G = {e: r[0] for e, r in ep_returns.items()}
    # episode 0 at t=0: mean of episodes 1 and 2 at t=0; never its own return
    assert np.isclose(b[0], (G[1][0] + G[2][0]) / 2)
    # t=2: episode 2 has ended (timeout, 2 frames) -> 0; episode 1 at t=2
    assert np.isclose(b[1], (G[1][2] + 0.0) / 2)
    # episode 1 at t=4: episode 0 ended in success (absorbing: 1/(1-γ)), episode 2 ended -> 0
    assert np.isclose(b[2], (1 / (1 - gamma) + 0.0) / 2)
    assert np.isclose(b[3], (G[0][1] + G[1][1]) / 2)
    assert ok.tolist() == [True, True, True, True, False]  # a scene rolled out once has no group


def test_gae_limits_and_segments():
    """λ = 1 is the Monte-Carlo advantage G − V (the trainer's return convention: success absorbing);
    λ = 0 is the one-step TD residual; a decision spanning several frames discounts over all of them."""
    from vla_rl_ros.core.rl.advantages import gae
    from vla_rl_ros.core.rl.samples import returns

    gamma = 0.9
    rew = np.array([0.1, 0.2, 0.0, 0.4, 0.3])
    t = np.array([0, 1, 3, 4])  # decision 1 covers frames 1-2
    V = np.array([1.0, -0.5, 2.0, 0.7])
    for success in (True, False):
        G = returns(rew, success, gamma)
        np.testing.assert_allclose(gae(V, t, rew, success, gamma, 1.0), G[t] - V, atol=1e-12)
        terminal = gamma / (1 - gamma) if success else 0.0
        td = gae(V, t, rew, success, gamma, 0.0)
        assert np.isclose(td[1], 0.2 + gamma * 0.0 + gamma**2 * V[2] - V[1])
        assert np.isclose(td[3], 0.3 + gamma * terminal - V[3])
    mid = gae(V, t, rew, True, gamma, 0.5)
    assert not np.allclose(mid, gae(V, t, rew, True, gamma, 1.0)) and not np.allclose(mid, td)
    with pytest.raises(ValueError, match="sorted"):
        gae(V, t[::-1], rew, True, gamma, 0.5)


def test_privileged_critic_features():
    from vla_rl_ros.core.sim.task_features import PRIVILEGED_NAMES, privileged_features
    from vla_rl_ros.core.sim.tasks import OBJECTS

    env0 = np.zeros(3 * (len(OBJECTS) + 1))
    for i in range(len(OBJECTS)):
        env0[3 * i : 3 * i + 3] = [0.5 + 0.01 * i, 0.1 * i, 0.02]
    env = env0.copy()
    env[-3:] = [0.5, 0.0, 0.3]  # grasp point
    red = OBJECTS.index("red_cube")
    f = privileged_features(env, env0, "put the red cube on the purple pad", 0.04, 60)
    assert f.shape == (len(PRIVILEGED_NAMES),)
    np.testing.assert_allclose(f[:3], env[-3:] - env[3 * red : 3 * red + 3], atol=1e-6)
    pad = OBJECTS.index("purple_pad")
    np.testing.assert_allclose(f[4:6], (env[3 * pad : 3 * pad + 2] - env[3 * red : 3 * red + 2]), atol=1e-6)
    assert f[PRIVILEGED_NAMES.index("family.place")] == 1 and f[PRIVILEGED_NAMES.index("time")] == 0.5
    push = privileged_features(env, env0, "push the red cube to the left", 0.04, 0)
    assert np.isclose(push[5], 0.10) and push[PRIVILEGED_NAMES.index("family.push")] == 1
    lifted = env.copy()
    lifted[3 * red + 2] += 0.05
    pick = privileged_features(lifted, env0, "pick up the red cube", 0.01, 0)
    assert np.isclose(pick[PRIVILEGED_NAMES.index("cube.lift")], 0.05)
    assert np.isclose(pick[PRIVILEGED_NAMES.index("cube_to_goal.dist")], 0.03)
    with pytest.raises(ValueError, match="environment_state"):
        privileged_features(env[:-3], env0, "pick up the red cube", 0.0, 0)


def test_rl_config_validate_rejects_bad_values_before_reading_files(tmp_path):
    """Every bad value is refused by RLConfig.validate with the field's name, before any file is read
    (the dataset and checkpoint paths here do not exist)."""
    import dataclasses

    ok = RLConfig(data=[str(tmp_path / "none")], init=str(tmp_path / "none"), out=str(tmp_path / "o"))
    assert ok.validate() is ok and ok.data == (str(tmp_path / "none"),)
    for f in dataclasses.fields(RLConfig):
        assert f.metadata.get("help"), f"RLConfig.{f.name} has no help"
    bad = {"advantage": "td", "ratio": "token", "trainable": "all", "critic": "oracle", "baseline": "median",
           "lr": 0.0, "clip": -0.1, "epochs": 0, "batch_size": -1, "gamma": 1.0, "gae_lambda": 1.5,
           "value_lr": float("nan"), "value_hidden": 0, "grad_clip_norm": 0.0, "log_ratio_max": 0.0,
           "kl_coef": -1.0, "data": (), "init": ""}
    for name, value in bad.items():
        with pytest.raises(ValueError, match=name):
            dataclasses.replace(ok, **{name: value}).validate()
    with pytest.raises(ValueError, match="group"):
        dataclasses.replace(ok, advantage="gae", baseline="group").validate()
    saved = ok.save(tmp_path / "config.json")
    assert RLConfig.load(saved) == ok


# --- real logged data with lagging chunks, near the joint limits ---------------------------------

LAG_SIGMA = 0.4  # rad: large enough that the truncation at the joint limits changes the density


def _lagging_episode(world, runtime, explorer, seed: int) -> tuple[list, str, dict]:
    """One explored rollout where the policy answers one tick late, as a slow policy node does:
    the chunk computed from the observation of tick k is first executed at tick k+1, from its
    token 1 (``rl.chunk_index`` 1); tick 0 executes token 0 of the first chunk. Frames and log-
    likelihoods are logged exactly as core/collect.policy_episode does (same helpers)."""
    from vla_rl_ros.core.collect import _frame, environment_state
    from vla_rl_ros.core.control import ChunkScheduler
    from vla_rl_ros.core.policy.runtime import Observation
    from vla_rl_ros.core.recording import parse_reference, step_log_prob

    world.reset(seed=seed)
    task = world.task
    sched = ChunkScheduler(world.joint_positions())
    dt = 1.0 / world.config.control_rate
    frames, k, pending, chunks = [], 0, None, {}
    while True:
        obs = world.observe(render=True)
        env = environment_state(world)
        mu = np.clip(runtime.infer(Observation(obs["images"], obs["state"], task.instruction)), PANDA.lower, PANDA.upper)
        executed, sigma = explorer.perturb(mu)
        stamp = int(round(k * dt * 1e9))
        chunks[stamp] = (mu, sigma)
        if k == 0:
            sched.offer(executed, k, stamp)
        if pending is not None:  # the chunk of the previous tick arrives now
            sched.offer(*pending)
        pending = (executed, k, stamp)
        target, ref = sched.target(k)
        cid, index = parse_reference(ref)
        cmu, csig = chunks[int(cid)]
        logp = step_log_prob(target, cmu[index], csig[index], PANDA.lower, PANDA.upper)
        world.apply_action(target)
        info = world.step_control()
        frames.append(_frame(obs, ["front"], target, cmu[index], csig[index], logp, int(cid), index,
                             runtime.version, info, env))
        k += 1
        if info.done:
            return frames, task.instruction, {"seed": seed, "success": bool(info.success), "steps": k}


@pytest.fixture(scope="module")
def lagging_data(tmp_path_factory):
    """4 lagging explored episodes (2 scenes × 2 noise draws) of a small policy, written through
    the real LeRobot writer -> (dataset root, init checkpoint)."""
    from tests.core.test_policy import small_model
    from vla_rl_ros.core.collect import ENV_STATE_NAMES
    from vla_rl_ros.core.data.schema import make_features
    from vla_rl_ros.core.data.writer import EpisodeWriter
    from vla_rl_ros.core.policy.checkpoint import save_checkpoint
    from vla_rl_ros.core.policy.runtime import PolicyRuntime
    from vla_rl_ros.core.rl.exploration import ExplorationConfig, Explorer
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    root = tmp_path_factory.mktemp("lag")
    init = save_checkpoint(small_model(), root / "init", version=2)
    world = PandaWorld(SimConfig(control_rate=10.0, image_width=32, image_height=32, renderer="tiny", max_steps=10))
    runtime = PolicyRuntime(str(init), backend="onnxruntime", joint_names=PANDA.joint_names, threads=1)
    features = make_features(list(PANDA.joint_names), ("front",), image_shape=(32, 32), environment_state=ENV_STATE_NAMES)
    writer = EpisodeWriter(root=root / "ds", repo_id="local/lag", fps=10, features=features, robot_type="panda")
    try:
        for i in range(4):
            ex = Explorer(PANDA.lower, PANDA.upper, ExplorationConfig(sigma=[LAG_SIGMA]), seed=100 + i)
            writer.submit(*_lagging_episode(world, runtime, ex, seed=30 + i // 2))
    finally:
        writer.close(timeout=600.0)
        world.close()
    assert len(writer.saved_episodes()) == 4 and not writer.failed_episodes()
    return root / "ds", init


def test_every_logged_log_likelihood_is_recomputed_row_by_row_including_lagging_chunks(lagging_data):
    """Each explored frame's logged log-likelihood (the logger's numpy truncated density) against
    scipy's truncated normal, row by row; then train-rl's decisions (core/rl/samples.py) —
    multi-token, lagging chunks whose token 0 never ran — recomputed from the logged μ/σ and from
    the init head at the anchor observation (the behaviour policy itself), row by row. The data
    lie near joint limits, so a density without the truncation term fails here."""
    from vla_rl_ros.core.data import schema as S
    from vla_rl_ros.core.data.reader import iter_episode_frames
    from vla_rl_ros.core.policy.checkpoint import load_checkpoint
    from vla_rl_ros.core.rl.samples import load_decisions
    from vla_rl_ros.core.rl.trainer import FrozenPolicy

    ds, init = lagging_data
    n_frames, n_lag, trunc = 0, 0, []
    for _, d in iter_episode_frames(ds):
        a, m, s = (np.asarray(d[k], dtype=np.float64) for k in (S.ACTION, S.ACTION_MEAN, S.SIGMA))
        idx = np.asarray(d[S.CHUNK_INDEX])
        lo, hi = PANDA.lower[None], PANDA.upper[None]
        on = s > 0
        sd = np.where(on, s, 1.0)
        ref = stats.truncnorm.logpdf(a, (lo - m) / sd, (hi - m) / sd, loc=m, scale=sd)
        ref = np.where(on, ref, 0.0).sum(1)
        plain = np.where(on, stats.norm.logpdf(a, m, sd), 0.0).sum(1)
        np.testing.assert_allclose(np.asarray(d[S.LOG_PROB], dtype=np.float64), ref, rtol=0, atol=2e-4)
        trunc.append(ref - plain)
        n_frames += len(a)
        n_lag += int(np.sum(idx > 0))
    trunc = np.concatenate(trunc)
    assert n_lag >= n_frames // 2  # every frame after the first of an episode runs a lagging chunk
    assert np.mean(np.abs(trunc) > 1e-3) > 0.5, np.abs(trunc).max()  # the truncation term is not negligible

    model, _ = load_checkpoint(init, joint_names=PANDA.joint_names)
    dec, _, summary = load_decisions([str(ds)], model.cfg.horizon, model.cfg.cameras, 0.95, progress=False)
    assert int(dec.mask.sum()) == n_frames  # every logged frame is an executed token of one decision
    lagging = dec.mask[:, 0] == 0
    assert lagging.sum() >= len(dec.ret) - 4, dec.mask[:, :3]  # all but each episode's first
    lo, hi = (torch.tensor(x, dtype=torch.float64) for x in (PANDA.lower, PANDA.upper))
    t64 = lambda x: torch.from_numpy(np.asarray(x, dtype=np.float64))  # noqa: E731
    acts, sig, mask = t64(dec.actions), t64(dec.sigma), t64(dec.mask)
    from_logged = chunk_log_prob(torch.minimum(torch.maximum(t64(dec.mu_b), lo), hi), acts, sig, mask, lo, hi)
    np.testing.assert_allclose(from_logged.numpy(), dec.logp_b, rtol=0, atol=2e-4)
    pol = FrozenPolicy(model, dec, progress=False)
    with torch.no_grad():
        mu0 = pol.all_means(model.head).double()
    from_head = chunk_log_prob(torch.minimum(torch.maximum(mu0, lo), hi), acts, sig, mask, lo, hi)
    np.testing.assert_allclose(from_head.numpy(), dec.logp_b, rtol=0, atol=2e-3)


def test_one_update_step_raises_likelihood_of_positive_advantage_actions(lagging_data, tmp_path):
    """One train-rl step (one epoch, one minibatch of every decision) on real logged data: the
    log-likelihood of the logged actions rises where the advantage is positive and falls where it
    is negative (group baseline: the advantages do not depend on the critic)."""
    from vla_rl_ros.core.policy.checkpoint import load_checkpoint
    from vla_rl_ros.core.rl.advantages import estimate_advantages
    from vla_rl_ros.core.rl.critic import Critic
    from vla_rl_ros.core.rl.samples import load_decisions
    from vla_rl_ros.core.rl.trainer import FrozenPolicy, train_rl

    ds, init = lagging_data
    cfg = RLConfig(data=(str(ds),), init=str(init), out=str(tmp_path / "rl"), epochs=1, batch_size=100_000,
                   lr=5e-4, baseline="group", value_steps=5, threads=1, export_onnx=False)
    res = train_rl(cfg, progress=False)
    assert res["group_fraction"] == 1.0 and res["history"][0]["clip_fraction"] == 0.0  # ratio 1: first step
    assert json.loads((tmp_path / "rl" / "config.json").read_text())["lr"] == 5e-4
    m0, _ = load_checkpoint(init, joint_names=PANDA.joint_names)
    m1, _ = load_checkpoint(res["checkpoint"], joint_names=PANDA.joint_names)
    dec, episodes, _ = load_decisions([str(ds)], m0.cfg.horizon, m0.cfg.cameras, cfg.gamma, progress=False)
    adv, what, _ = estimate_advantages(cfg, dec, episodes, Critic(torch.zeros(len(dec.ret)), 0.0, "features", True))
    assert what.startswith("group (100%")
    lo, hi = (torch.tensor(x) for x in (PANDA.lower, PANDA.upper))
    t = lambda x: torch.from_numpy(x)  # noqa: E731

    def loglik(model):
        pol = FrozenPolicy(model, dec, progress=False)
        with torch.no_grad():
            mu = pol.all_means(model.head)
        return chunk_log_prob(torch.minimum(torch.maximum(mu, lo), hi), t(dec.actions), t(dec.sigma), t(dec.mask), lo, hi)

    delta = (loglik(m1) - loglik(m0)).double().numpy()
    a = adv.numpy()
    pos, neg = a > 0.1, a < -0.1
    print(f"\nΔ log π: A>0 {delta[pos].mean():+.4f} ({pos.sum()} rows), A<0 {delta[neg].mean():+.4f} ({neg.sum()} rows)")
    assert pos.sum() >= 5 and neg.sum() >= 5
    assert delta[pos].mean() > 0 > delta[neg].mean()
    assert float(np.dot(a, delta)) > 0  # the surrogate Σ A·Δlog π rose


def test_filtered_and_awr_objectives_are_weighted_max_likelihood_of_the_executed_actions():
    """objective filtered: the mean moves to the average executed action of the weighted decisions
    (successes of mixed groups, core/rl/advantages.decision_weights); awr: to the exp(A/β)-weighted
    average; decisions of groups whose rollouts agree carry weight 0 with drop_agreeing_groups."""
    import dataclasses

    from vla_rl_ros.core.rl.advantages import decision_weights
    from vla_rl_ros.core.rl.objective import Samples, rl_objective
    from vla_rl_ros.core.rl.samples import Decisions, EpisodeInfo

    # 6 episodes, one decision each: scene A (episodes 0-2) mixed, scene B (3-4) all fail, 5 alone, succeeded
    succ = [True, False, True, False, False, True]
    info = EpisodeInfo(returns={e: (np.zeros(3), s) for e, s in enumerate(succ)}, rewards={},
                       group={0: "A", 1: "A", 2: "A", 3: "B", 4: "B"})
    dec = Decisions(images=None, state=None, lang=None, actions=None, mu_b=None, sigma=None, mask=None, logp_b=None,
                    ret=np.zeros(6), episode=np.arange(6), version=np.zeros(6), t=np.zeros(6, int))
    w, kept = decision_weights(RLConfig(objective="filtered"), dec, info)
    assert w.tolist() == [1, 0, 1, 0, 0, 1] and kept["mixed_groups"] == 1 and kept["groups"] == 2
    w, _ = decision_weights(RLConfig(drop_agreeing_groups=True), dec, info)
    assert w.tolist() == [1, 1, 1, 0, 0, 1]
    assert decision_weights(RLConfig(), dec, info)[0].tolist() == [1] * 6
    with pytest.raises(ValueError, match="no decision carries weight"):
        decision_weights(RLConfig(objective="filtered"), dec, dataclasses.replace(
            info, returns={e: (np.zeros(3), False) for e in range(6)}))

    g = torch.Generator().manual_seed(0)
    n, H, D = 6, 2, 3
    acts = torch.randn(n, H, D, generator=g, dtype=torch.float64)
    sig = torch.full((n, H, D), 0.5, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0]] * n, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 0.5, 0.0, -0.5, 2.0], dtype=torch.float64)
    lo, hi = torch.full((D,), -1e3, dtype=torch.float64), torch.full((D,), 1e3, dtype=torch.float64)
    for objective, weight, target_w in (
        ("filtered", torch.tensor([1.0, 0, 1, 0, 0, 1], dtype=torch.float64), torch.tensor([1.0, 0, 1, 0, 0, 1])),
        ("awr", None, torch.exp(adv)),
    ):
        cfg = RLConfig(objective=objective, kl_coef=0.0, awr_beta=1.0)
        mu0 = torch.zeros(H, D, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([mu0], max_iter=200, line_search_fn="strong_wolfe")
        s = Samples(actions=acts, sigma=sig, mask=mask, logp_b=torch.zeros(n, dtype=torch.float64), adv=adv,
                    mu_b=torch.zeros_like(acts), mu_base=torch.zeros_like(acts), sig_ref=sig, weight=weight)

        def closure():
            opt.zero_grad()
            loss, _, _ = rl_objective(mu0.expand(n, H, D), s, cfg, lo, hi)
            loss.backward()
            return loss

        opt.step(closure)
        tw = target_w.double()
        expected = (tw[:, None] * acts[:, 0]).sum(0) / tw.sum()
        torch.testing.assert_close(mu0.detach()[0], expected, atol=1e-5, rtol=0)


def test_discrete_gripper_exploration_and_its_unbiased_gradient():
    """The gripper as a Bernoulli close/open choice around μ's command (exploration
    ``gripper_temperature``): the explorer's choices follow p(close) = sigmoid((m − μ)/τ), the
    logged and the update's log-probabilities agree, and the gradient of train-rl's loss on the
    gripper's mean is unbiased against the analytic one; leaving the gripper out of the
    likelihood (the Gaussian default with σ 0) gives it no gradient at all."""
    from vla_rl_ros.core.rl.exploration import gripper_logp
    from vla_rl_ros.core.rl.objective import Samples, chunk_log_prob, rl_objective

    lo, hi = PANDA.lower, PANDA.upper
    tau = 0.003
    mu = np.tile((lo + hi) / 2, (8, 1))
    mu[:, 7] = [0.04, 0.04, 0.025, 0.021, 0.019, 0.015, 0.0, 0.0]  # open ... closing ... closed
    cfg = ExplorationConfig(sigma=[0.01], gripper_temperature=tau)
    closes = np.zeros(8)
    for seed in range(400):
        ex = Explorer(lo, hi, cfg, seed=seed)
        a, sig = ex.perturb(mu)
        assert set(np.unique(a[:, 7])) <= {0.0, 0.04} and np.all(sig[:, 7] == 0)
        closes += a[:, 7] == 0.0
    p_close = 1 / (1 + np.exp(-(0.02 - mu[:, 7]) / tau))
    assert np.all(np.abs(closes / 400 - p_close) < 4 * np.sqrt(p_close * (1 - p_close) / 400) + 1e-3), closes / 400
    assert closes[0] == 0 and closes[-1] == 400  # where μ is clear, the choice is μ's own
    lp = ex.token_log_probs(a, mu, sig)
    t = lambda x: torch.as_tensor(np.asarray(x)[None], dtype=torch.float64)  # noqa: E731
    got = chunk_log_prob(t(mu), t(a), t(sig), torch.ones(1, 8, dtype=torch.float64), t(lo)[0], t(hi)[0],
                         None, torch.tensor([tau]))
    assert float(got) == pytest.approx(float(lp.sum()), abs=1e-6)
    with pytest.raises(ValueError, match="not both"):
        ExplorationConfig(sigma=[0.01], gripper_sigma=0.004, gripper_temperature=tau).sigma_matrix(8, 8)

    # analytic check: one token, reward r_close / r_open; J(μ_g) = p(μ_g) r_c + (1 − p(μ_g)) r_o
    r_c, r_o, mu_b = 1.0, -0.5, 0.021
    n, batches = 10000, 20
    lo_t, hi_t = torch.tensor(lo[-2:], dtype=torch.float64), torch.tensor(hi[-2:], dtype=torch.float64)
    m = torch.tensor(mu_b, dtype=torch.float64, requires_grad=True)
    p_c = torch.sigmoid((0.02 - m) / tau)
    (g_true,) = torch.autograd.grad(p_c * r_c + (1 - p_c) * r_o, m)
    ests, naive = [], []
    for b in range(batches):
        rng = np.random.default_rng(b)
        pc = float(1 / (1 + np.exp(-(0.02 - mu_b) / tau)))
        close = rng.random(n) < pc
        acts = np.zeros((n, 1, 2))
        acts[:, 0, 1] = np.where(close, 0.0, 0.04)
        acts[:, 0, 0] = 0.0  # an unexplored arm dimension (σ 0): executes μ
        r = np.where(close, r_c, r_o)
        logp_b = gripper_logp(acts[:, 0, 1], np.full(n, mu_b), 0.0, 0.04, tau)
        for grip, out in ((torch.full((n,), tau, dtype=torch.float64), ests), (None, naive)):
            w = torch.tensor([0.0, mu_b], dtype=torch.float64, requires_grad=True)
            mu_t = w.expand(n, 1, 2)
            s = Samples(actions=torch.tensor(acts), sigma=torch.zeros(n, 1, 2, dtype=torch.float64),
                        mask=torch.ones(n, 1, dtype=torch.float64),
                        logp_b=torch.tensor(logp_b if grip is not None else np.zeros(n)),
                        adv=torch.tensor(r - (pc * r_c + (1 - pc) * r_o)), mu_b=mu_t.detach().clone(),
                        mu_base=mu_t.detach().clone(), sig_ref=torch.full((n, 1, 2), 0.01, dtype=torch.float64),
                        grip_tau=grip)
            loss, _, _ = rl_objective(mu_t, s, RLConfig(kl_coef=0.0), lo_t, hi_t)
            (g,) = torch.autograd.grad(-loss, w)
            out.append(float(g[1]))
    est, se = np.mean(ests), np.std(ests, ddof=1) / np.sqrt(batches)
    assert abs(est - float(g_true)) < 4 * se, (est, se, float(g_true))
    assert abs(float(g_true)) > 10 * se  # the check has power
    assert np.allclose(naive, 0.0)  # without its likelihood the gripper never learns
