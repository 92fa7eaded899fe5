"""Advantage estimators: one function per estimator, chosen by :func:`estimate_advantages`.

* :func:`mc_value_advantages` — Monte-Carlo return minus the critic's value, A = G − V(o).
* :func:`mc_group_advantages` — Monte-Carlo return minus the leave-one-out mean return of the
  other rollouts from the same scene (:func:`group_baseline`, RLOO/GRPO-style) where the scene was
  rolled out more than once, else minus the critic's value.
* :func:`gae_advantages` — TD(λ) advantages of the critic (:func:`gae`).

``RLConfig.advantage`` and ``RLConfig.baseline`` select one; a choice the data cannot support is
an error, never a silent substitute: ``baseline group`` without repeated scenes, ``advantage gae``
with a critic that predicts worse than the mean return.

**TD(λ) (GAE).** With values V at each decision, the TD residual of decision i is
δ_i = R_i + γ^{n_i} V_{i+1} − V_i, where R_i is the discounted reward over the n_i frames until
the next decision, and after the last decision V is the episode's terminal value (success is
absorbing: γ/(1−γ), the convention of :func:`.samples.returns`; a timeout: 0).
A_i = Σ_l (γλ)^l δ_{i+l} (time in frames). λ = 1 gives the Monte-Carlo advantage G − V; smaller λ
credits each action with what the critic says changed right after it — far lower variance when
the critic is good, which is the point of giving it privileged inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from vla_rl_ros.core.rl.config import RLConfig
from vla_rl_ros.core.rl.critic import Critic
from vla_rl_ros.core.rl.samples import Decisions, EpisodeInfo


def group_baseline(t: np.ndarray, episode: np.ndarray, ep_returns: dict, ep_group: dict,
                   gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out baseline from episodes that started in the same scene (same seed) under
    the same policy version: b(e, t) = mean over the *other* episodes j of the group of G_j(t),
    their return from the same time step (past its end: 1/(1-γ) for a success, which is
    absorbing, 0 for a timeout). It depends only on the initial state, t and independent
    rollouts, never on episode e's own actions, so the gradient stays unbiased (as RLOO/GRPO);
    it removes the scene's difficulty from the advantage, which a value function fitted on a
    few hundred episodes cannot. Returns (baseline, has_group) per decision.

    ``ep_returns``: episode -> (G array, success); ``ep_group``: episode -> hashable key.
    """
    members: dict = {}
    for e, k in ep_group.items():
        members.setdefault(k, []).append(e)
    absorbing = 1.0 / (1.0 - gamma)
    base = np.zeros(len(t), dtype=np.float64)
    ok = np.zeros(len(t), dtype=bool)
    for i, (ti, e) in enumerate(zip(t, episode)):
        others = [j for j in members.get(ep_group.get(int(e)), []) if j != int(e)]
        if not others:
            continue
        vals = []
        for j in others:
            G, success = ep_returns[j]
            vals.append(G[ti] if ti < len(G) else (absorbing if success else 0.0))
        base[i] = float(np.mean(vals))
        ok[i] = True
    return base, ok


def gae(values: np.ndarray, t: np.ndarray, rewards: np.ndarray, success: bool, gamma: float,
        lam: float) -> np.ndarray:
    """TD(λ) advantages of one episode's decisions (sorted by ``t``, their first frame).

    ``values``: V at each decision; ``rewards``: the episode's per-frame rewards. See module doc.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0)
    t = np.asarray(t, dtype=np.int64)
    if np.any(np.diff(t) <= 0):
        raise ValueError("decisions must be sorted by their first frame")
    T = len(rewards)
    terminal = gamma / (1.0 - gamma) if success else 0.0
    bounds = np.append(t, T)
    delta = np.zeros(n)
    for i in range(n):
        seg = np.asarray(rewards[bounds[i] : bounds[i + 1]], dtype=np.float64)
        R = float(np.sum(seg * gamma ** np.arange(len(seg))))
        v_next = values[i + 1] if i + 1 < n else terminal
        delta[i] = R + gamma ** len(seg) * v_next - values[i]
    adv = np.zeros(n)
    acc = 0.0
    for i in range(n - 1, -1, -1):
        steps = bounds[i + 1] - bounds[i]
        acc = delta[i] + (gamma * lam) ** steps * acc
        adv[i] = acc
    return adv


def mc_value_advantages(ret: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A = G − V: Monte-Carlo return minus the critic's value."""
    return ret - values


def mc_group_advantages(ret: torch.Tensor, values: torch.Tensor, group_base: np.ndarray,
                        has_group: np.ndarray) -> torch.Tensor:
    """A = G − b: b the leave-one-out group mean (:func:`group_baseline`) where the decision's
    scene was rolled out more than once, else the critic's value."""
    return ret - torch.where(torch.from_numpy(has_group), torch.from_numpy(group_base).float(), values)


def gae_advantages(dec: Decisions, values: np.ndarray, episodes: EpisodeInfo, gamma: float,
                   lam: float) -> np.ndarray:
    """TD(λ) advantages of every decision, episode by episode (:func:`gae`)."""
    adv = np.zeros(len(values))
    for e in np.unique(dec.episode):
        rows = np.flatnonzero(dec.episode == e)
        rows = rows[np.argsort(dec.t[rows])]
        _, success = episodes.returns[int(e)]
        adv[rows] = gae(values[rows], dec.t[rows], episodes.rewards[int(e)], success, gamma, lam)
    return adv


def decision_weights(cfg: RLConfig, dec: Decisions, episodes: EpisodeInfo) -> tuple[torch.Tensor, dict]:
    """Per-decision weight of the update (N,) and what it kept.

    A scene's *group* is its rollouts under one policy version (:attr:`EpisodeInfo.group`); a group
    is *mixed* when some of its rollouts succeeded and some failed. ``objective filtered``: 1 for
    decisions of successful rollouts of mixed groups (every success when no scene repeats), else 0.
    ``drop_agreeing_groups``: 0 for decisions of groups that are not mixed (they say nothing about
    what made the difference). Otherwise 1."""
    members: dict = {}
    for e, k in episodes.group.items():
        members.setdefault(k, []).append(e)
    succ = {e: bool(ok) for e, (_, ok) in episodes.returns.items()}
    mixed_ep = {e: len({succ[j] for j in members[k]}) == 2 for e, k in episodes.group.items() if len(members[k]) > 1}
    ep = [int(e) for e in dec.episode]
    success = np.array([succ[e] for e in ep])
    grouped = np.array([e in mixed_ep for e in ep])
    mixed = np.array([mixed_ep.get(e, False) for e in ep])
    w = np.ones(len(ep))
    if cfg.objective == "filtered":
        w = (success & (mixed | ~grouped)).astype(np.float64)
    if cfg.drop_agreeing_groups:
        w = w * (mixed | ~grouped)
    if not np.any(w > 0):
        raise ValueError(f"no decision carries weight (objective {cfg.objective}, drop_agreeing_groups "
                         f"{cfg.drop_agreeing_groups}): every scene's rollouts agree; explore more (more rollouts per "
                         f"scene, a larger sigma) or turn the filter off")
    n_groups = len(set(episodes.group[e] for e in mixed_ep))
    n_mixed = len(set(episodes.group[e] for e, m in mixed_ep.items() if m))
    return torch.from_numpy(w).float(), {"groups": n_groups, "mixed_groups": n_mixed,
                                         "decisions_weighted": int(np.sum(w > 0)), "decisions": len(ep)}


def estimate_advantages(cfg: RLConfig, dec: Decisions, episodes: EpisodeInfo, critic: Critic,
                        model_adv: torch.Tensor | None = None) -> tuple[torch.Tensor, str, float]:
    """The advantage estimator ``cfg`` names, normalised when ``cfg.normalize_advantages``.
    ``model_adv``: the world model's advantages (``core/wm/scoring.model_advantages``), required by
    ``advantage world_model``. Returns (advantages (N,), a description of the estimator, fraction of decisions with a group)."""
    ret = torch.from_numpy(dec.ret).float()
    gb, has_group = group_baseline(dec.t, dec.episode, episodes.returns, episodes.group, cfg.gamma)
    group_fraction = float(has_group.mean())
    if cfg.advantage == "gae":
        if not critic.ok:
            raise ValueError(f"advantage gae needs a critic that beats the mean return: its held-out MSE is "
                             f"{critic.value_loss:.3f} (>= critic_max_mse {cfg.critic_max_mse:g}); "
                             f"use advantage mc, or more data")
        adv = torch.from_numpy(gae_advantages(dec, critic.values.double().numpy(), episodes, cfg.gamma,
                                              cfg.gae_lambda)).float()
        what = f"GAE(λ={cfg.gae_lambda:g}) on the {critic.kind} critic"
    elif cfg.advantage == "world_model":
        if model_adv is None:
            raise ValueError("advantage world_model needs the world model's advantages")
        if not bool((model_adv != 0).any()):
            raise ValueError("every decision's branch halted in the world model (the data lie outside what it "
                             "was trained on): retrain it on these episodes with train-wm")
        adv = model_adv.float()
        what = "world model: Q(executed) − mean Q(candidates)"
    elif cfg.advantage == "mc" and cfg.baseline == "group" and group_fraction == 0:
        raise ValueError("--baseline group needs episodes that share a seed (collect with a group size > 1)")
    elif cfg.advantage == "mc" and cfg.baseline != "value" and group_fraction > 0:
        adv = mc_group_advantages(ret, critic.values, gb, has_group)
        what = f"group ({100 * group_fraction:.0f}% of decisions), else {critic.description}"
    elif cfg.advantage == "mc":
        adv = mc_value_advantages(ret, critic.values)
        what = critic.description
    else:
        raise ValueError(f"advantage must be one of mc, gae, world_model, got {cfg.advantage!r}")
    if cfg.normalize_advantages:
        adv = (adv - adv.mean()) / adv.std().clamp(min=1e-6)
    return adv, what, group_fraction
