"""A contextual bandit with joint limits and chunks: the RL estimator's analytic check, run as train-rl runs it.

Contexts o_j (j < M, uniform; a constant 1 then N(0, 1) entries). The policy plans a chunk of H
tokens × D joints with mean μ_W(o)_{i,d} = W_{i,d} · o inside joint limits [lo_d, hi_d]; the
explorer samples every token from the normal N(μ, σ_d²) *truncated* to the limits
(:func:`.exploration.truncnorm_sample`, the control path's sampler) and the logger records the
truncated log-density of the executed tokens (:func:`.exploration.truncnorm_logpdf`, the numpy
function the trajectory logger calls). Which tokens are executed varies per decision as on the
robot: token 0 only (replanning every tick), tokens 0–1, or tokens 1–2 (a lagging chunk whose
first token was never executed); token H−1 is never executed. Reward R = −Σ_{executed i, d}
(a_{i,d} − c_{i,d}(o))², c = C o.

With the truncated normal's mean m(μ) and variance v(μ) in closed form,

    J(W) = E_{o, pattern} Σ_{executed i, d} −[v(μ_{i,d}) + (m(μ_{i,d}) − c_{i,d})²]

is exact, and its gradient (autograd through the closed form) is the reference. The estimate is
the gradient of :func:`.objective.rl_objective` — the very loss ``train_rl`` minimises on a
minibatch, with the settings of an :class:`~.config.RLConfig` (chunk ratio over the executed
tokens, truncated density, the clip, the log-ratio clamp, the KL to the initial head) — on
decisions sampled from a behaviour W_b, with advantage R − V_b(o, pattern) (the exact expected
reward under the behaviour: a baseline that depends on neither the action nor W).

* At W = W_b (every train-rl update starts there: the init head is the behaviour) the ratio is 1,
  the clip does not bind and the KL's gradient is 0: the estimator must be unbiased, clip included.
* At W ≠ W_b the unclipped importance-weighted estimator is unbiased; the PPO clip is not, and
  :func:`clip_bias` measures by how much (printed by ``python -m vla_rl_ros.core.rl.bandit``).
* Naive alternatives (:data:`ESTIMATORS`): ``no_behaviour`` ignores the logged likelihood
  (ratio ≡ 1, biased toward ∇J(W_b)); ``all_tokens`` puts unexecuted tokens into the ratio and
  score (unbiased, noisier); ``white_likelihood`` scores coherent noise (``rho`` > 0) as if every
  token were drawn on its own (biased: the tokens' noises are correlated).
* Coherent noise (``rho`` > 0, :func:`.exploration.chain_sample`): every token is marginally
  N(μ, σ²) when the limits do not bind, so J is the same closed form; the bandit is then built
  with ``limits="wide"`` (limits 100 σ away) and the estimator must be unbiased with the chain's
  conditional likelihood (:func:`.exploration.chain_logpdf`).

Test statistic (:func:`estimate`): the estimate's projection on the analytic gradient,
s = ⟨ĝ, g⟩ / ⟨g, g⟩ (1 when unbiased), with its standard error over independent batches; a bias
×(1+b) moves s to 1+b, i.e. b / se standard errors (``power_z_5pct`` for b = 5%).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vla_rl_ros.core.rl.config import RLConfig
from vla_rl_ros.core.rl.exploration import chain_conditionals, chain_sample, truncnorm_logpdf
from vla_rl_ros.core.rl.objective import Samples, rl_objective

ESTIMATORS = ("correct", "no_behaviour", "all_tokens", "white_likelihood")
#: executed token sets per decision: replanning every tick, two tokens of one chunk, a lagging chunk
PATTERNS = ((0,), (0, 1), (1, 2))
#: a clip ε that never binds (ratios stay far below 1 + 1e9): the plain importance-weighted estimator
NO_CLIP = 1e9


def _truncnorm_moments(mu: torch.Tensor, sigma: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Mean and variance of N(μ, σ²) truncated to [lo, hi] (differentiable in μ)."""
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    phi = lambda x: torch.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)  # noqa: E731
    Z = torch.special.ndtr(b) - torch.special.ndtr(a)
    q = (phi(a) - phi(b)) / Z
    mean = mu + sigma * q
    var = sigma**2 * (1.0 + (a * phi(a) - b * phi(b)) / Z - q**2)
    return mean, var


class TruncatedChunkBandit:
    def __init__(self, contexts: int = 8, d: int = 3, horizon: int = 4, seed: int = 0, rho: float = 0.0,
                 limits: str = "near"):
        g = np.random.default_rng(seed)
        self.h, self.d, self.rho = horizon, d, rho
        self.lo = np.array([-1.0, -0.5])
        self.hi = np.array([1.0, 1.5])
        self.sigma = np.array([0.5, 0.5])
        if limits == "wide":  # 100 σ away: the chain is the plain AR(1) Gaussian, J in closed form
            self.lo, self.hi = self.lo - 50.0, self.hi + 50.0
        elif limits != "near":
            raise ValueError(f"limits must be near or wide, got {limits!r}")
        self.o = np.concatenate([np.ones((contexts, 1)), g.normal(size=(contexts, d - 1))], axis=1)
        D = len(self.lo)
        center = (self.lo + self.hi) / 2
        # behaviour means inside the limits, half of them within 1.5 σ of a limit (truncation matters)
        self.w_b = np.zeros((horizon, D, d))
        self.w_b[:, :, 0] = center + g.uniform(-0.5, 0.5, size=(horizon, D))
        self.w_b[:, :, 1:] = g.normal(size=(horizon, D, d - 1)) * 0.18
        self.c = self.w_b + g.normal(size=(horizon, D, d)) * 0.5  # targets: the gradient is far from 0
        self.w_eval = self.w_b + g.normal(size=(horizon, D, d)) * 0.04  # an evaluation point ≠ behaviour
        for w in (self.w_b, self.w_eval):
            mu = np.einsum("idk,jk->jid", w, self.o)
            if np.any(mu <= self.lo) or np.any(mu >= self.hi):
                raise ValueError("bandit means must stay inside the limits (no clamp kink)")

    def _t(self, x):
        return torch.as_tensor(x, dtype=torch.float64)

    def masks(self) -> np.ndarray:
        """(P, H) executed-token masks of :data:`PATTERNS`."""
        m = np.zeros((len(PATTERNS), self.h))
        for p, toks in enumerate(PATTERNS):
            m[p, list(toks)] = 1.0
        return m

    def expected_reward(self, w: torch.Tensor) -> torch.Tensor:
        """(M, P) exact E[R | context, pattern] under the policy with weights ``w`` (H, D, d)."""
        mu = torch.einsum("idk,jk->jid", w, self._t(self.o))  # (M, H, D)
        c = torch.einsum("idk,jk->jid", self._t(self.c), self._t(self.o))
        m, v = _truncnorm_moments(mu, self._t(self.sigma), self._t(self.lo), self._t(self.hi))
        per_token = -(v + (m - c) ** 2).sum(-1)  # (M, H)
        return per_token @ self._t(self.masks()).T  # (M, P)

    def analytic_gradient(self, w: np.ndarray) -> np.ndarray:
        wt = self._t(w).requires_grad_(True)
        (g,) = torch.autograd.grad(self.expected_reward(wt).mean(), wt)
        return g.numpy()

    def sample(self, n: int, rng: np.random.Generator) -> dict:
        """``n`` logged decisions of the behaviour, in train-rl's layout (padded, masked)."""
        j = rng.integers(0, len(self.o), n)
        p = rng.integers(0, len(PATTERNS), n)
        mu_b = np.einsum("idk,nk->nid", self.w_b, self.o[j])
        sig = np.broadcast_to(self.sigma, mu_b.shape)
        a = chain_sample(mu_b, sig, self.lo, self.hi, self.rho, rng)  # the whole chunk is sampled
        mask = self.masks()[p]
        c = np.einsum("idk,nk->nid", self.c, self.o[j])
        r = -(((a - c) ** 2).sum(-1) * mask).sum(1)  # only the executed tokens act
        # what the logger writes: each executed token given the previous executed one of its chunk
        start = (mask > 0) & ~np.concatenate([np.zeros((n, 1), bool), mask[:, :-1] > 0], axis=1)
        m_c, s_c = chain_conditionals(a, mu_b, sig, self.lo, self.hi, self.rho, start)
        logp_b = (truncnorm_logpdf(a, m_c, s_c, self.lo, self.hi).sum(-1) * mask).sum(1)
        with torch.no_grad():
            v_b = self.expected_reward(self._t(self.w_b)).numpy()[j, p]
        # padding as core/rl/samples.py lays out unexecuted tokens: action 0, σ 1, mask 0
        on = mask[..., None] > 0
        return {"o": self.o[j], "a": np.where(on, a, 0.0), "a_full": a, "sig": np.where(on, sig, 1.0),
                "mask": mask, "mu_b": np.where(on, mu_b, 0.0), "mu_b_full": mu_b, "logp_b": logp_b,
                "adv": r - v_b}

    def gradient(self, w: np.ndarray, cfg: RLConfig, batch: dict, kind: str = "correct",
                 bias: float = 1.0) -> np.ndarray:
        """Ascent direction −∇ loss of :func:`rl_objective` at ``w`` on ``batch`` (``bias``: a
        deliberate scale of the advantage, for the test's power check)."""
        if kind not in ESTIMATORS:
            raise ValueError(f"unknown estimator {kind!r}")
        t = self._t
        wt = t(w).requires_grad_(True)
        mu = torch.einsum("idk,nk->nid", wt, t(batch["o"]))
        acts, sig, mask, mu_b = t(batch["a"]), t(batch["sig"]), t(batch["mask"]), t(batch["mu_b"])
        logp_b = t(batch["logp_b"])
        if kind == "all_tokens":  # ratio and score over every planned token, executed or not
            acts, mu_b = t(batch["a_full"]), t(batch["mu_b_full"])
            sig, mask = t(np.broadcast_to(self.sigma, acts.shape).copy()), torch.ones_like(mask)
            sig_full = np.broadcast_to(self.sigma, batch["a_full"].shape)
            m_c, s_c = chain_conditionals(batch["a_full"], batch["mu_b_full"], sig_full, self.lo, self.hi, self.rho)
            logp_b = t(truncnorm_logpdf(batch["a_full"], m_c, s_c, self.lo, self.hi).sum((-1, -2)))
        sig_ref = sig[:, :1].expand_as(sig)
        rho = torch.full((len(acts),), float(self.rho), dtype=torch.float64)
        s = Samples(actions=acts, sigma=sig, mask=mask, logp_b=logp_b, adv=bias * t(batch["adv"]), mu_b=mu_b,
                    mu_base=t(np.einsum("idk,nk->nid", self.w_b, batch["o"])), sig_ref=sig_ref, rho=rho)
        if kind in ("no_behaviour", "white_likelihood"):
            from vla_rl_ros.core.rl.objective import chunk_log_prob

            if kind == "white_likelihood":  # coherent noise scored token by token
                s.rho = None
                with torch.no_grad():
                    s.logp_b = chunk_log_prob(mu_b, acts, sig, mask, t(self.lo), t(self.hi))
            else:  # ratio ≡ 1: the score of the current policy, unweighted
                with torch.no_grad():
                    mu_c = torch.minimum(torch.maximum(mu, t(self.lo)), t(self.hi))
                    s.logp_b = chunk_log_prob(mu_c, acts, sig, mask, t(self.lo), t(self.hi), s.rho)
        loss, _, _ = rl_objective(mu, s, cfg, t(self.lo), t(self.hi))
        (g,) = torch.autograd.grad(-loss, wt)
        return g.numpy()


def estimate(bandit: TruncatedChunkBandit, w: np.ndarray, cfg: RLConfig, batches: int = 40, n: int = 25000,
             kind: str = "correct", seed: int = 1000, bias: float = 1.0) -> dict:
    """Mean estimate over ``batches`` independent batches of ``n`` decisions, against the analytic
    gradient at ``w``: projection s (1 = unbiased) and its z-score, per-entry z-scores, relative bias."""
    g = bandit.analytic_gradient(w)
    est = np.stack([bandit.gradient(w, cfg, bandit.sample(n, np.random.default_rng(seed + b)), kind, bias)
                    for b in range(batches)])
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(batches)
    proj = (est.reshape(batches, -1) @ g.ravel()) / (g.ravel() @ g.ravel())
    s, s_se = float(proj.mean()), float(proj.std(ddof=1) / np.sqrt(batches))
    live = g != 0
    return {
        "analytic": g, "mean": mean, "se": se, "projection": s, "projection_se": s_se,
        "projection_z": (s - 1.0) / s_se, "power_z_5pct": 0.05 / s_se,
        "max_abs_z": float(np.max(np.abs(mean - g)[live] / se[live])),
        "min_entry_snr": float(np.min(np.abs(g[live]) / se[live])),
        # never-executed tokens: no likelihood gradient (only the KL to the initial head, 0 at W_b)
        "dead_entries_max_abs": float(np.abs(est[:, ~live]).max()) if (~live).any() else 0.0,
        "rel_bias": float(np.linalg.norm(mean - g) / np.linalg.norm(g)),
        "mse": float(np.mean(np.sum((est - g) ** 2, axis=tuple(range(1, est.ndim))))),
    }


def clip_bias(bandit: TruncatedChunkBandit, cfg: RLConfig, batches: int = 40, n: int = 25000) -> dict:
    """The PPO clip's bias at an evaluation point ≠ behaviour (KL term off to isolate it):
    the clipped estimator ``cfg.clip`` against the unclipped one, both against the analytic gradient."""
    off = dataclasses.replace(cfg, kl_coef=0.0)
    unclipped = estimate(bandit, bandit.w_eval, dataclasses.replace(off, clip=NO_CLIP), batches, n)
    clipped = estimate(bandit, bandit.w_eval, off, batches, n)
    return {"clip": cfg.clip, "unclipped": unclipped, "clipped": clipped}


def main() -> None:
    cfg = RLConfig()
    b = TruncatedChunkBandit()
    print("estimator = ∇ of train-rl's minibatch loss (core/rl/objective.rl_objective), settings of RLConfig(): "
          f"ratio {cfg.ratio}, clip {cfg.clip}, kl_coef {cfg.kl_coef}; truncated density; executed tokens {PATTERNS}")
    at_b = estimate(b, b.w_b, cfg)
    print(f"at the behaviour (train-rl's first step): projection s = {at_b['projection']:.4f} ± {at_b['projection_se']:.4f} "
          f"(z {at_b['projection_z']:+.2f}); a 5% bias would be z {at_b['power_z_5pct']:.1f}; "
          f"max |z| over entries {at_b['max_abs_z']:.2f}")
    cb = clip_bias(b, cfg)
    for name in ("unclipped", "clipped"):
        r = cb[name]
        print(f"off the behaviour, {name:<9}: s = {r['projection']:.4f} ± {r['projection_se']:.4f} "
              f"(z {r['projection_z']:+.1f}), relative bias ‖E ĝ − ∇J‖/‖∇J‖ = {r['rel_bias']:.3f}, "
              f"max |z| {r['max_abs_z']:.1f}")
    off = dataclasses.replace(cfg, clip=NO_CLIP, kl_coef=0.0)
    print(f"{'estimator (off the behaviour, no clip)':<40}{'rel. bias':>10}{'max |z|':>10}{'MSE':>12}")
    for kind in ESTIMATORS:
        r = estimate(b, b.w_eval, off, batches=20, n=10000, kind=kind)
        print(f"{kind:<40}{r['rel_bias']:>10.3f}{r['max_abs_z']:>10.1f}{r['mse']:>12.3f}")


if __name__ == "__main__":
    main()
