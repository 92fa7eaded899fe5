"""Scoring candidate chunks in a world model: short imagined branches from real logged states.

For a real decision with latent z, a chunk a is scored by a branch of ``branch`` chunks:
Q(z, a) = Σ_h γ^{hk} [R̂(z_h, a_h) − λ·u(z_h, a_h)] + γ^{Hk} V̂(z_H), with a_0 = a, a_h (h ≥ 1)
the model's behaviour chunk at z_h (``act``), u the ensemble disagreement and λ = ``penalty``
(MOPO's pessimism). A branch whose disagreement exceeds the model's ``halt_threshold`` at any
step *halts* (MOReL): it carries no information and is left out.

:func:`model_advantages`: for each real decision, K candidates drawn from the same distribution
the explorer drew from (logged μ, σ, ρ), A = Q(z, a_executed) − mean over the non-halted
candidates of Q(z, a_k) — a low-variance advantage of the action that was actually taken, from
one real state, that real rollouts could only give with K returns from the same state.
"""

from __future__ import annotations

import numpy as np
import torch

from vla_rl_ros.core.rl.exploration import chain_sample
from vla_rl_ros.core.wm.interface import WorldModel

#: decisions per batch of model calls (memory only)
SCORE_BATCH = 512


def executed_chunk(x: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """(N, k, D): the first k executed tokens of each decision's (N, H, D) array; a decision that
    executed fewer is padded with its last executed token (the controller holds the last target)."""
    out = np.empty((x.shape[0], k, x.shape[2]), dtype=x.dtype)
    for i in range(x.shape[0]):
        rows = np.flatnonzero(mask[i] > 0)
        if len(rows) == 0:
            raise ValueError(f"decision {i} has no executed token")
        rows = np.concatenate([rows[:k], np.repeat(rows[-1:], max(0, k - len(rows)))])
        out[i] = x[i, rows[:k]]
    return out


def branch_q(wm: WorldModel, z: torch.Tensor, chunk: torch.Tensor, branch: int, penalty: float):
    """(Q (B,), halted (B,) bool) of chunks (B, k, D) from latents (B, Z); see the module doc."""
    if branch < 1:
        raise ValueError(f"branch must be >= 1 chunk, got {branch}")
    if branch > 1 and not hasattr(wm, "act"):
        raise ValueError("branches longer than one chunk need a world model with act(z) (a behaviour head)")
    disc_k = wm.gamma ** wm.chunk_len
    q = torch.zeros(len(z))
    halted = torch.zeros(len(z), dtype=torch.bool)
    disc = 1.0
    a = chunk
    for h in range(branch):
        u = wm.uncertainty(z, a)
        halted |= u > wm.halt_threshold
        q = q + disc * (wm.reward(z, a) - penalty * u)
        z = wm.step(z, a)
        disc *= disc_k
        if h + 1 < branch:
            a = wm.act(z)
    return q + disc * wm.predict(z).value, halted


def sample_like_explorer(mu: np.ndarray, sigma: np.ndarray, rho: float, lo: np.ndarray, hi: np.ndarray, K: int,
                         rng: np.random.Generator) -> np.ndarray:
    """(N, K, k, D) candidate chunks drawn as the explorer draws (truncated chain with correlation ρ
    over tokens); dimensions with σ = 0 (not explored) are μ."""
    m = np.repeat(mu[:, None], K, axis=1).astype(np.float64)
    s = np.repeat(sigma[:, None], K, axis=1).astype(np.float64)
    explored = s > 0
    c = chain_sample(m, np.where(explored, s, 1.0), lo, hi, rho, rng)
    return np.where(explored, c, np.clip(m, lo, hi))


def model_advantages(wm: WorldModel, z: torch.Tensor, executed: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                     rho: np.ndarray, lo: np.ndarray, hi: np.ndarray, candidates: int, branch: int, penalty: float,
                     seed: int, progress=True) -> tuple[torch.Tensor, dict]:
    """Advantages (N,) of the executed chunks (module doc) and what happened: halted shares, Q spread."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    N, k = len(z), wm.chunk_len
    adv = torch.zeros(N)
    exec_halted = torch.zeros(N, dtype=torch.bool)
    cand_halted, spread = [], []
    for i in tqdm(range(0, N, SCORE_BATCH), desc="world-model advantages", disable=not progress, leave=False):
        sl = slice(i, min(i + SCORE_BATCH, N))
        B = sl.stop - sl.start
        zb = z[sl]
        qe, he = branch_q(wm, zb, torch.from_numpy(executed[sl]).float(), branch, penalty)
        cands = np.concatenate([sample_like_explorer(mu[j:j + 1], sigma[j:j + 1], float(rho[j]), lo, hi, candidates, rng)
                                for j in range(sl.start, sl.stop)])
        qc, hc = branch_q(wm, zb.repeat_interleave(candidates, 0), torch.from_numpy(cands.reshape(-1, k, mu.shape[-1])).float(),
                          branch, penalty)
        qc, hc = qc.view(B, candidates), hc.view(B, candidates)
        ok = (~hc).float()
        n_ok = ok.sum(1)
        base = (qc * ok).sum(1) / n_ok.clamp(min=1)
        valid = (~he) & (n_ok > 0)
        adv[sl] = torch.where(valid, qe - base, torch.zeros(B))
        exec_halted[sl] = he
        cand_halted.append(hc.float().mean().item())
        spread.append(qc.std(1).mean().item())
    return adv, {"executed_halted": float(exec_halted.float().mean()), "candidates_halted": float(np.mean(cand_halted)),
                 "candidate_q_sd": float(np.mean(spread)), "candidates": candidates, "branch": branch}


def best_of_k(wm: WorldModel, z: torch.Tensor, mu: np.ndarray, sigma: np.ndarray, rho: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, candidates: int, scale: float, branch: int, penalty: float, seed: int,
              progress=True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Best-of-K targets (after PA-RL): at each real decision, μ's own chunk and K candidates drawn
    like the explorer with σ × ``scale`` are scored in the model; the best non-halted one is the
    target. Returns (targets (N, k, D), improvement Q_best − Q_μ (N,; 0 where μ's branch halted or
    μ is best), info)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    N, k, D = len(z), wm.chunk_len, mu.shape[-1]
    targets = np.array(mu, dtype=np.float64, copy=True)
    gain = np.zeros(N)
    picked_mu, halted = 0, []
    for i in tqdm(range(0, N, SCORE_BATCH), desc="best-of-K in the world model", disable=not progress, leave=False):
        sl = slice(i, min(i + SCORE_BATCH, N))
        B = sl.stop - sl.start
        cands = np.concatenate([sample_like_explorer(mu[j:j + 1], sigma[j:j + 1] * scale, float(rho[j]), lo, hi,
                                                     candidates, rng) for j in range(sl.start, sl.stop)])
        cands = np.concatenate([np.clip(mu[sl], lo, hi)[:, None], cands], axis=1)  # candidate 0: μ itself
        q, h = branch_q(wm, z[sl].repeat_interleave(candidates + 1, 0),
                        torch.from_numpy(cands.reshape(-1, k, D)).float(), branch, penalty)
        q, h = q.view(B, candidates + 1).numpy(), h.view(B, candidates + 1).numpy()
        qm = np.where(h, -np.inf, q)
        best = qm.argmax(1)
        ok = ~h[:, 0] & np.isfinite(qm.max(1))
        rows = np.arange(B)
        targets[sl] = np.where(ok[:, None, None], cands[rows, best], targets[sl])
        gain[sl] = np.where(ok, qm[rows, best] - q[:, 0], 0.0)
        picked_mu += int(np.sum(ok & (best == 0)))
        halted.append(h[:, 1:].mean())
    return targets, gain, {"candidates": candidates, "scale": scale, "branch": branch, "mu_best": picked_mu / max(N, 1),
                           "candidates_halted": float(np.mean(halted)), "gain_mean": float(gain.mean()),
                           "gain_p90": float(np.percentile(gain, 90))}
