"""RL samples from logged episodes: one *decision* per executed chunk.

Frames of one chunk share ``rl.chunk_id``; the first of them, with ``rl.chunk_index == k0`` (0
when the policy answers within a tick, more when it lags), executes token k0, and the frame k0
ticks earlier is the chunk's anchor (its observation is the one μ was computed from); the frames
k0, k0+1, … are the tokens actually executed. Unexecuted tokens never appear in the log and never
in the likelihood. Frames logged without noise (σ = 0: deploy mode, the expert) carry no
likelihood and are skipped; single dimensions with σ = 0 (the gripper, when not explored)
executed μ and are left out of the likelihood.

Returns: the sim's shaped reward is in [0, 1] per step and an episode ends 3 steps after success,
so a success would *lose* the reward a hovering failure keeps collecting; success is therefore
treated as absorbing with reward 1 forever: a terminal bonus γ/(1−γ) (:func:`returns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vla_rl_ros.core.data import schema as S
from vla_rl_ros.core.policy.text import InstructionEncoder

#: ``privileged(environment_state (T, E), state (T, S), instruction) -> (T, P) or None``: the
#: simulator's privileged critic features of every frame of an episode (None: not available);
#: see ``core/sim/task_features.episode_privileged_features``
PrivilegedFn = Callable[[np.ndarray, np.ndarray, str], "np.ndarray | None"]


@dataclass
class Decisions:
    """One row per executed chunk (anchor observation + executed tokens)."""

    images: np.ndarray  # (N, C, H, W, 3) uint8 at the anchor
    state: np.ndarray  # (N, S)
    lang: np.ndarray  # (N, L)
    actions: np.ndarray  # (N, H, D) executed (padded)
    mu_b: np.ndarray  # (N, H, D) logged behaviour mean (padded)
    sigma: np.ndarray  # (N, H, D) (padding = 1)
    mask: np.ndarray  # (N, H) 1 = executed
    logp_b: np.ndarray  # (N,) Σ logged log-likelihood over executed tokens
    ret: np.ndarray  # (N,) Monte-Carlo return from the anchor
    episode: np.ndarray  # (N,) episode id (for cross-fitting)
    version: np.ndarray  # (N,) policy version that produced the chunk
    t: np.ndarray  # (N,) frame index of the decision's first executed token
    priv: np.ndarray | None = None  # (N, P) privileged critic features at the anchor (sim data only)
    rho: np.ndarray | None = None  # (N,) correlation of the exploration noise over the chunk's tokens (0: white)
    grip_tau: np.ndarray | None = None  # (N,) temperature of the discrete gripper exploration (0: not explored)


@dataclass
class EpisodeInfo:
    """Per-episode facts the advantage estimators need, keyed by the decisions' episode id."""

    returns: dict  # episode -> (G per frame, success)
    rewards: dict  # episode -> reward per frame
    group: dict  # episode -> (dataset, seed, policy version): episodes that started in the same scene


def returns(rewards: np.ndarray, success: bool, gamma: float) -> np.ndarray:
    """Discounted returns with success treated as absorbing (reward 1 forever)."""
    g = gamma / (1.0 - gamma) if success else 0.0
    out = np.zeros(len(rewards), dtype=np.float64)
    for t in range(len(rewards) - 1, -1, -1):
        g = float(rewards[t]) + gamma * g
        out[t] = g
    return out


def _chunk_spans(sigma: np.ndarray, idx: np.ndarray, cid: np.ndarray, horizon: int) -> list[tuple[int, int, int]]:
    """(first frame t, executed tokens n, first token k0) of every explored chunk of an episode."""
    out, t, T = [], 0, len(idx)
    while t < T:
        k0 = int(idx[t])
        anchor = t - k0  # the frame whose observation the chunk was computed from
        if not np.any(sigma[t] > 0) or anchor < 0 or k0 >= horizon or (t > 0 and cid[t - 1] == cid[t]):
            t += 1
            continue
        n = 1
        while (t + n < T and k0 + n < horizon and cid[t + n] == cid[t] and idx[t + n] == k0 + n
               and np.any(sigma[t + n] > 0)):
            n += 1
        out.append((t, n, k0))
        t += n
    return out


def decisions_from_episode(d: dict, horizon: int, cameras, gamma: float,
                           privileged: PrivilegedFn | None = None) -> list[dict]:
    """Split one logged episode into decisions (see module doc). ``d`` as from the reader;
    ``privileged``: the simulator's critic features (used when ``d`` has the environment state)."""
    sigma = np.asarray(d[S.SIGMA], dtype=np.float64)
    idx = np.asarray(d[S.CHUNK_INDEX]).astype(np.int64)
    cid = np.asarray(d[S.CHUNK_ID]).astype(np.int64)
    success = bool(np.any(np.asarray(d[S.SUCCESS])))
    G = returns(np.asarray(d[S.REWARD], dtype=np.float64), success, gamma)
    logp = np.asarray(d[S.LOG_PROB], dtype=np.float64)
    priv = None
    if privileged is not None and S.ENV_STATE in d:
        priv = privileged(np.asarray(d[S.ENV_STATE]), np.asarray(d[S.STATE]), str(d["task"]))
    rows, dof = [], sigma.shape[1]
    for t, n, k0 in _chunk_spans(sigma, idx, cid, horizon):
        a = t - k0
        acts, mu, sig, mask = np.zeros((horizon, dof)), np.zeros((horizon, dof)), np.ones((horizon, dof)), np.zeros(horizon)
        tok = slice(k0, k0 + n)  # executed token positions inside the chunk
        acts[tok] = d[S.ACTION][t : t + n]
        mu[tok] = d[S.ACTION_MEAN][t : t + n]
        sig[tok] = sigma[t : t + n]
        mask[tok] = 1.0
        rows.append({
            "images": np.stack([d[S.image_key(c)][a] for c in cameras]),
            "state": np.asarray(d[S.STATE][a], dtype=np.float32),
            "actions": acts, "mu_b": mu, "sigma": sig, "mask": mask,
            "logp_b": float(np.sum(logp[t : t + n])),
            "ret": G[t], "version": int(np.asarray(d[S.POLICY_VERSION])[t]), "t": t,
        })
        if priv is not None:
            rows[-1]["priv"] = priv[a]
    return rows


def load_decisions(roots, horizon: int, cameras, gamma: float, progress=True, episodes: str = "",
                   privileged: PrivilegedFn | None = None, embed=None) -> tuple[Decisions, EpisodeInfo, dict]:
    """Decisions of every explored episode of ``roots`` (``episodes``: a selection of each
    dataset's episodes, see :func:`~vla_rl_ros.core.data.reader.parse_episode_list`). ``embed``:
    logged instruction -> the network's language input (``core/policy/grounding.skill_embedder``
    of the acting checkpoint); default: the sentence's own embedding.
    Returns (decisions, per-episode facts, summary: episodes, successes, skipped, instructions)."""
    from tqdm import tqdm

    from vla_rl_ros.core.data.reader import episode_summaries, iter_episode_frames, parse_episode_list
    from vla_rl_ros.core.data.store import read_info

    rows, tasks, summary = [], [], {"episodes": 0, "skipped_no_noise": 0, "successes": 0}
    info_e = EpisodeInfo(returns={}, rewards={}, group={})
    keys = [S.image_key(c) for c in cameras] + [S.STATE, S.ACTION, S.ACTION_MEAN, S.SIGMA, S.LOG_PROB,
                                                S.CHUNK_ID, S.CHUNK_INDEX, S.POLICY_VERSION, S.REWARD, S.SUCCESS]
    ep_id = 0
    for root in roots:
        info = read_info(Path(root))
        if info is None:
            raise FileNotFoundError(f"no LeRobot dataset at {str(root)!r} (meta/info.json missing)")
        missing = [k for k in keys if k not in info["features"]]
        ekeys = keys + ([S.ENV_STATE] if S.ENV_STATE in info["features"] else [])
        if missing:
            raise ValueError(f"dataset {root} lacks {missing}: not logged by this stack's trajectory logger?")
        sel = parse_episode_list(episodes, int(info["total_episodes"]))
        metas = {row["episode_index"]: (row.get("meta") or {}) for row in episode_summaries(root)}
        seeds = {e: m.get("seed") for e, m in metas.items()}
        for e_idx, d in tqdm(iter_episode_frames(root, keys=ekeys, episodes=sel), total=len(sel),
                             desc=f"loading {Path(root).name}", disable=not progress, leave=False):
            summary["episodes"] += 1
            success = bool(np.any(np.asarray(d[S.SUCCESS])))
            summary["successes"] += int(success)
            dec = decisions_from_episode(d, horizon, cameras, gamma, privileged)
            if not dec:
                summary["skipped_no_noise"] += 1
                continue
            explo = metas.get(e_idx, {}).get("exploration") or {}
            rho, tau = float(explo.get("rho", 0.0)), float(explo.get("gripper_temperature", 0.0))
            for r in dec:
                r["episode"] = ep_id
                r["rho"], r["grip_tau"] = rho, tau
                tasks.append(str(d["task"]))
            rew = np.asarray(d[S.REWARD], dtype=np.float64)
            info_e.returns[ep_id] = (returns(rew, success, gamma), success)
            info_e.rewards[ep_id] = rew
            if seeds.get(e_idx) is not None:  # same scene, same policy version: one group
                info_e.group[ep_id] = (str(root), int(seeds[e_idx]), dec[0]["version"])
            rows.extend(dec)
            ep_id += 1
    if not rows:
        raise ValueError("no explored decisions in the data (were the episodes collected with exploration?)")
    embed = embed or InstructionEncoder().encode
    lang_of = {t: embed(t) for t in sorted(set(tasks))}
    st = lambda k, dt=np.float32: np.stack([r[k] for r in rows]).astype(dt)  # noqa: E731
    dec = Decisions(
        images=np.stack([r["images"] for r in rows]), state=st("state"),
        lang=np.stack([lang_of[t] for t in tasks]).astype(np.float32),
        actions=st("actions"), mu_b=st("mu_b"), sigma=st("sigma"), mask=st("mask"),
        logp_b=st("logp_b", np.float64), ret=st("ret", np.float64),
        episode=np.array([r["episode"] for r in rows]), version=np.array([r["version"] for r in rows]),
        t=np.array([r["t"] for r in rows]),
        # privileged critic inputs only when every decision has them (datasets may be mixed)
        priv=st("priv") if all("priv" in r for r in rows) else None,
        rho=st("rho", np.float64), grip_tau=st("grip_tau", np.float64),
    )
    summary["decisions"] = len(rows)
    summary["instructions"] = {k: v.tolist() for k, v in lang_of.items()}
    return dec, info_e, summary
