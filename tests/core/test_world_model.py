"""The world model: it learns chunk-level latent dynamics (beating copy-the-last-latent), knows
where it extrapolates, survives a save/load round trip and refuses what is not its own; a
stand-in model plugged in through the interface drives train-rl; train-wm runs end to end on
real logged episodes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.core.test_policy import small_model
from tests.core.test_rl import lagging_data  # noqa: F401  (the fixture: real logged explored episodes)
from vla_rl_ros.core.wm.config import WMConfig
from vla_rl_ros.core.wm.data import Frames
from vla_rl_ros.core.wm.evaluate import auc, evaluate_world_model
from vla_rl_ros.core.wm.interface import Prediction, WorldModel
from vla_rl_ros.core.wm.latent import LatentWorldModel, fit_latent_world_model

F_DIM = 24


def synthetic_frames(episodes: int, T: int, seed: int) -> Frames:
    """Position-controlled arm: s_{t+1} = a_t = s_t + drift_e + noise; an object o_e fixed per
    episode; features a fixed linear map of (s, o); reward, success and contact from |s_xy − o|."""
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(99).normal(size=(F_DIM, 8 + 2 + 1))
    parts = {k: [] for k in ("feats", "state", "action", "reward", "success", "contact", "episode", "t")}
    for e in range(episodes):
        o = rng.uniform(-0.3, 0.3, 2)
        drift = rng.normal(0, 0.02, 8)
        s = np.zeros(8) + rng.normal(0, 0.1, 8)
        for t in range(T):
            a = s + drift + rng.normal(0, 0.005, 8)
            dist = np.linalg.norm(s[:2] - o)
            parts["feats"].append(W @ np.concatenate([s, o, [1.0]]) + rng.normal(0, 1e-3, F_DIM))
            parts["state"].append(s.copy())
            parts["action"].append(a)
            parts["reward"].append(np.exp(-dist))
            parts["contact"].append(dist < 0.15)
            parts["episode"].append(e)
            parts["t"].append(t)
            s = a
        parts["success"].extend([bool(np.linalg.norm(s[:2] - o) < 0.3)] * T)
    cat = {k: np.asarray(v) for k, v in parts.items()}
    rew = cat["reward"].astype(np.float32)
    ret = np.zeros_like(rew)
    for e in range(episodes):  # a discounted return per episode (no absorbing bonus: enough here)
        idx = np.flatnonzero(cat["episode"] == e)
        g = 0.0
        for i in idx[::-1]:
            g = rew[i] + 0.95 * g
            ret[i] = g
    return Frames(feats=cat["feats"].astype(np.float32), state=cat["state"].astype(np.float32),
                  action=cat["action"].astype(np.float32), action_mean=cat["action"].astype(np.float32), reward=rew,
                  ret=ret, success=cat["success"], contact=cat["contact"], priv=None, episode=cat["episode"], t=cat["t"])


CFG = WMConfig(data=("synthetic",), chunk=4, latent_pca=8, members=5, hidden=64, steps=800, batch_size=128, lr=3e-3,
               seed=0)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    policy = small_model()
    train, test = synthetic_frames(50, 30, seed=1), synthetic_frames(10, 30, seed=2)
    wm, history = fit_latent_world_model(CFG, train, policy, progress=False)
    return policy, wm, history, train, test


def test_latent_dynamics_beat_copying_the_last_latent_and_the_heads_rank(fitted):
    _, wm, history, _, test = fitted
    m = evaluate_world_model(wm, test)
    print("\n", {h: round(r["ratio"], 3) for h, r in m["horizons"].items()}, "success AUC", round(m["success_auc"], 3),
          "contact AUC", round(m["contact_auc"], 3), "spearman", round(m["disagreement_error_spearman"], 3))
    assert history[0]["dynamics"] > 5 * history[-2]["dynamics"]  # it learned
    for h in ("1", "2", "4"):  # held-out open loop: far better than no model at all
        assert m["horizons"][h]["ratio"] < 0.3, m["horizons"]
    assert m["horizons"]["1"]["model_mse"] < m["horizons"]["4"]["model_mse"]  # errors compound
    assert m["contact_auc"] > 0.8 and m["value_mse"] < 0.8  # the drift that decides the future is not in one frame
    assert 0.0 <= m["halted_fraction"] < 0.5


def test_disagreement_flags_chunks_far_from_the_data(fitted):
    _, wm, _, train, _ = fitted
    start, _ = train.transitions(4)
    z = wm.latent(torch.from_numpy(train.feats[start[:300]]), torch.from_numpy(train.state[start[:300]]))
    chunk = torch.from_numpy(train.chunks(start[:300], 4))
    u_in = wm.uncertainty(z, chunk)
    u_out = wm.uncertainty(z, chunk + 0.5)  # 50 delta-σ away from anything logged
    assert float((u_in <= wm.halt_threshold).float().mean()) > 0.8
    assert float((u_out > wm.halt_threshold).float().mean()) > 0.9
    assert float(u_out.median()) > 3 * float(u_in.median())
    with pytest.raises(ValueError, match="chunk must be"):
        wm.uncertainty(z, chunk[:, :3])


def test_save_load_round_trip_and_refusals(fitted, tmp_path):
    policy, wm, _, train, _ = fitted
    wm.save(tmp_path / "wm", {"note": 1})
    back = LatentWorldModel.load(tmp_path / "wm", policy)
    z = wm.latent(torch.from_numpy(train.feats[:50]), torch.from_numpy(train.state[:50]))
    chunk = torch.from_numpy(train.chunks(np.arange(50), 4))
    torch.testing.assert_close(back.step(z, chunk), wm.step(z, chunk))
    torch.testing.assert_close(back.predict(z).value, wm.predict(z).value)
    assert back.halt_threshold == wm.halt_threshold and back.chunk_len == 4
    with pytest.raises(ValueError, match="another policy backbone"):
        LatentWorldModel.load(tmp_path / "wm", small_model(seed=1))
    with pytest.raises(ValueError, match="not a world model"):
        LatentWorldModel.load(tmp_path, policy)
    (tmp_path / "wm" / "wm.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="unreadable"):
        LatentWorldModel.load(tmp_path / "wm", policy)


def test_auc_and_config_validation():
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auc(np.array([0.9, 0.1]), np.array([0, 1])) == 0.0
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))
    with pytest.raises(ValueError, match="members"):
        WMConfig(data=("x",), members=1).validate()
    with pytest.raises(ValueError, match="held_out"):
        WMConfig(data=("x",), held_out=1.0).validate()
    with pytest.raises(ValueError, match="data"):
        WMConfig().validate()


class PreferHigherJoint0(WorldModel):
    """A stand-in world model: a chunk's reward is how far it moves joint 0 up; no dynamics. Any
    class implementing the interface drives train-rl this way (a pixel model on a GPU, say)."""

    chunk_len, gamma = 1, 0.95

    def __init__(self, halt_threshold: float = 1.0, u: float = 0.0):
        self.halt_threshold, self.u = halt_threshold, u

    def encode(self, images, state, lang):
        return state.clone()

    def step(self, z, chunk):
        return torch.cat([chunk[:, -1], z[:, chunk.shape[2]:]], -1)

    def predict(self, z):
        zero = torch.zeros(len(z))
        return Prediction(value=zero, success=zero + 0.5, contact=zero)

    def reward(self, z, chunk):
        return 100.0 * (chunk[:, :, 0] - z[:, None, 0]).mean(1)

    def uncertainty(self, z, chunk):
        return torch.full((len(z),), self.u)


def test_a_stand_in_world_model_drives_train_rl_through_the_interface(lagging_data, tmp_path):
    from vla_rl_ros.core.policy.checkpoint import load_checkpoint
    from vla_rl_ros.core.rl.config import RLConfig
    from vla_rl_ros.core.rl.samples import load_decisions
    from vla_rl_ros.core.rl.trainer import FrozenPolicy, train_rl
    from vla_rl_ros.core.robot import PANDA

    ds, init = lagging_data
    cfg = RLConfig(data=(str(ds),), init=str(init), out=str(tmp_path / "rl"), epochs=3, batch_size=100_000, lr=5e-4,
                   advantage="world_model", world_model="stand-in", wm_candidates=8, value_steps=5, threads=1,
                   export_onnx=False, kl_coef=0.0)
    res = train_rl(cfg, progress=False, world_model=PreferHigherJoint0())
    assert res["world_model"]["executed_halted"] == 0.0 and res["world_model"]["candidates"] == 8
    m0, _ = load_checkpoint(init, joint_names=PANDA.joint_names)
    m1, _ = load_checkpoint(res["checkpoint"], joint_names=PANDA.joint_names)
    dec, _, _ = load_decisions([str(ds)], m0.cfg.horizon, m0.cfg.cameras, cfg.gamma, progress=False)
    with torch.no_grad():
        d = (FrozenPolicy(m1, dec, False).all_means(m1.head) - FrozenPolicy(m0, dec, False).all_means(m0.head))
    shift = d[:, 0].mean(0)  # first token, per joint
    print("\nΔμ first token per joint:", [round(float(x), 4) for x in shift])
    assert float(shift[0]) > 0  # the update moved μ toward what the model rewards
    assert float(shift[0]) > 2 * float(shift[1:7].abs().mean())  # ... and mostly there
    # best-of-K: imitate, at each logged state, the candidate the model scores best
    bok = train_rl(dataclasses.replace(cfg, objective="best_of_k", advantage="mc", out=str(tmp_path / "bok"),
                                       epochs=20, lr=2e-3, wm_scale=0.5), progress=False,
                   world_model=PreferHigherJoint0())
    assert bok["world_model"]["mu_best"] < 0.1 and bok["world_model"]["decisions_imitated"] > 0
    m2, _ = load_checkpoint(bok["checkpoint"], joint_names=PANDA.joint_names)
    with torch.no_grad():
        d2 = (FrozenPolicy(m2, dec, False).all_means(m2.head) - FrozenPolicy(m0, dec, False).all_means(m0.head))
    print("best-of-K Δμ first token per joint:", [round(float(x), 4) for x in d2[:, 0].mean(0)])
    assert float(d2[:, 0, 0].mean()) > 2 * float(d2[:, 0, 1:7].abs().mean())
    assert float(d2[:, 0, 0].mean()) > float(shift[0])  # a deterministic target moves μ further than the ratio
    # every branch beyond the model's halt threshold: no advantage at all, a clear error
    with pytest.raises(ValueError, match="halted"):
        train_rl(cfg, progress=False, world_model=PreferHigherJoint0(halt_threshold=1.0, u=2.0))
    with pytest.raises(ValueError, match="world-model"):
        RLConfig(data=(str(ds),), init=str(init), advantage="world_model").validate()


def test_train_wm_end_to_end_on_logged_episodes_then_train_rl_uses_it(lagging_data, tmp_path):
    from vla_rl_ros.core.rl.config import RLConfig
    from vla_rl_ros.core.rl.trainer import train_rl
    from vla_rl_ros.core.sim.task_features import episode_contact
    from vla_rl_ros.core.wm.train import train_world_model

    ds, init = lagging_data
    cfg = WMConfig(data=(str(ds),), checkpoint=str(init), out=str(tmp_path / "wm"), chunk=2, latent_pca=4, hidden=16,
                   steps=30, batch_size=8, held_out=0.25, threads=1)
    res = train_world_model(cfg, contact=episode_contact, progress=False)
    assert res["train_episodes"] == 3 and res["held_out_episodes"] == 1
    m = json.loads((tmp_path / "wm" / "metrics.json").read_text())["held_out"]
    assert set(m["horizons"]) >= {"1", "2"} and np.isfinite(m["horizons"]["1"]["model_mse"])
    assert (tmp_path / "wm" / "wm.png").stat().st_size > 1000
    assert json.loads((tmp_path / "wm" / "config.json").read_text())["chunk"] == 2
    out = train_rl(RLConfig(data=(str(ds),), init=str(init), out=str(tmp_path / "rl"), epochs=1, batch_size=16,
                            advantage="world_model", world_model=res["model"], wm_candidates=4, wm_branch=2,
                            value_steps=5, threads=1, export_onnx=False), progress=False)
    assert out["world_model"]["branch"] == 2 and out["advantage"] == "world_model"
    assert out["version"] == 3


def test_train_wm_fits_only_the_episodes_of_its_budget(lagging_data, tmp_path):
    """episode_ids gives the world model the same real-episode budget as train-rl's (bench/wm_gain.py)."""
    from vla_rl_ros.core.wm.train import train_world_model

    ds, init = lagging_data
    common = dict(data=(str(ds),), checkpoint=str(init), chunk=2, latent_pca=4, hidden=16, steps=5, batch_size=8,
                  held_out=0.0, threads=1)
    res = train_world_model(WMConfig(**common, out=str(tmp_path / "a"), episode_ids="1:3"), progress=False)
    assert res["train_episodes"] == 2, res["train_episodes"]
    every = train_world_model(WMConfig(**common, out=str(tmp_path / "b")), progress=False)
    assert every["train_episodes"] == 4 and every["frames"] > res["frames"]
    with pytest.raises(ValueError, match="outside"):
        train_world_model(WMConfig(**common, out=str(tmp_path / "c"), episode_ids="2:9"), progress=False)


@pytest.mark.timeout(600)
def test_improve_refits_the_world_model_every_round_and_refuses_mismatched_options(tmp_path):
    import subprocess
    import sys

    from tests.core.test_policy import instruction_table

    from vla_rl_ros.core.policy.checkpoint import save_checkpoint

    init = save_checkpoint(small_model(), tmp_path / "init", version=3, instructions=instruction_table())
    base = [sys.executable, "-m", "vla_rl_ros.cli", "improve", "--direct", "--init", str(init), "--rounds", "2",
            "--episodes-per-round", "4", "--seed-repeat", "2", "--eval-episodes", "2", "--max-steps", "14",
            "--epochs", "1", "--workers", "1", "--sigma", "0.03", "--replan-every", "2", "--rho", "0.5"]
    r = subprocess.run(base + ["--out", str(tmp_path / "imp"), "--world-model", "--objective", "best_of_k",
                               "--wm-steps", "20", "--wm-candidates", "4"], capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("world model refitted on") == 2
    assert "world model refitted on 4 episodes" in r.stdout and "world model refitted on 8 episodes" in r.stdout
    for rd in (1, 2):  # one model per round, one step per executed chunk (--replan-every 2)
        assert json.loads((tmp_path / "imp" / f"round_{rd}" / "wm" / "config.json").read_text())["chunk"] == 2
        assert (tmp_path / "imp" / f"round_{rd}" / "wm" / "model" / "wm.safetensors").is_file()
    rows = json.loads((tmp_path / "imp" / "rounds.json").read_text())
    assert [x["version"] for x in rows] == [3, 4, 5]
    # the run's TensorBoard scalars (core/scalars.py): improve's per round, each round's update and world model
    from vla_rl_ros.core.scalars import read_scalars

    tb = read_scalars(tmp_path / "imp" / "tb")
    assert tb["improve/version"] == [(0, 3.0), (1, 4.0), (2, 5.0)]
    assert tb["improve/success"] == [(x["round"], pytest.approx(k / n, rel=1e-6))
                                     for x in rows for k, n in [x["eval"]["overall"]]]
    assert [s for s, _ in tb["improve/explored_success"]] == [1, 2]  # round 0 explored nothing
    for rd in (1, 2):
        history = json.loads((tmp_path / "imp" / f"round_{rd}" / "history.json").read_text())
        ess = read_scalars(tmp_path / "imp" / f"round_{rd}" / "tb")["rl/ess"]
        assert ess == [(h["epoch"], pytest.approx(h["ess"], rel=1e-6)) for h in history]
        wm = read_scalars(tmp_path / "imp" / f"round_{rd}" / "wm" / "tb")
        assert [s for s, _ in wm["wm/dynamics"]] == [0, 19] and [s for s, _ in wm["wm/heads"]] == [0, 19]
    for extra, msg in ((["--world-model"], "needs --advantage world_model"),
                       (["--objective", "best_of_k"], "needs --world-model")):
        bad = subprocess.run(base + ["--out", str(tmp_path / "bad"), *extra], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and msg in bad.stderr, bad.stderr[-2000:]
