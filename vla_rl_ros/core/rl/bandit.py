"""A linear-Gaussian contextual bandit with quadratic reward: the RL estimator's analytic check.

Context o ~ N(0, I_d). The policy plans a chunk of H scalar tokens with mean μ_W(o) = W o
(W ∈ R^{H×d}); only the first k tokens are executed. Reward R = −Σ_{i<k} (a_i − c_iᵀo)².
For a_i = μ_i + σ ε_i the expected reward is J(W) = −Σ_{i<k} ‖W_i − c_i‖² − kσ², so

    ∇_{W_i} J = −2 (W_i − c_i)  for i < k,   0 for the unexecuted rows i ≥ k.

Data come from a behaviour W_b ≠ W, so the estimator needs the likelihood ratio. Three
estimators of ∇J(W), all through :mod:`vla_rl_ros.core.rl.objective` (the training code path):

* ``correct`` — ratio over executed tokens, logged behaviour likelihood (unbiased);
* ``no_behaviour`` — ignores the behaviour likelihood (ratio ≡ 1): on-policy formula on
  off-policy data, biased toward ∇J(W_b);
* ``all_tokens`` — ratio and score over all H planned tokens, unexecuted included: the extra
  factors carry no reward information, so it is still unbiased but noisier.

``python -m vla_rl_ros.core.rl.bandit`` prints the comparison (also run by the test suite).
"""

from __future__ import annotations

import numpy as np
import torch

from vla_rl_ros.core.rl.objective import chunk_log_prob, policy_loss

ESTIMATORS = ("correct", "no_behaviour", "all_tokens")


class Bandit:
    def __init__(self, d: int = 3, horizon: int = 4, executed: int = 2, sigma: float = 0.5, seed: int = 0):
        g = np.random.default_rng(seed)
        self.d, self.h, self.k, self.sigma = d, horizon, executed, sigma
        self.c = g.normal(size=(horizon, d))
        self.w_b = g.normal(size=(horizon, d)) * 0.5
        self.w = self.w_b + g.normal(size=(horizon, d)) * 0.15  # evaluation point ≠ behaviour

    def analytic_gradient(self) -> np.ndarray:
        g = -2.0 * (self.w - self.c)
        g[self.k:] = 0.0
        return g

    def sample(self, n: int, rng: np.random.Generator):
        o = rng.normal(size=(n, self.d))
        mu_b = o @ self.w_b.T
        a = mu_b + self.sigma * rng.normal(size=(n, self.h))  # the whole chunk is sampled
        r = -(((a - o @ self.c.T)[:, : self.k]) ** 2).sum(1)  # only the executed tokens act
        return o, a, mu_b, r

    def estimate(self, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
        if kind not in ESTIMATORS:
            raise ValueError(f"unknown estimator {kind!r}")
        o, a, mu_b, r = self.sample(n, rng)
        t = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
        w = t(self.w).requires_grad_(True)
        mu = (t(o) @ w.T)[..., None]  # (n, H, 1)
        acts, sig = t(a)[..., None], torch.full((n, self.h, 1), self.sigma, dtype=torch.float64)
        mask = torch.zeros(n, self.h, dtype=torch.float64)
        mask[:, : (self.h if kind == "all_tokens" else self.k)] = 1.0
        logp = chunk_log_prob(mu, acts, sig, mask)
        logp_b = chunk_log_prob(t(mu_b)[..., None], acts, sig, mask)
        if kind == "no_behaviour":
            logp_b = logp.detach()  # ratio ≡ 1: the score of the current policy, unweighted
        loss, _ = policy_loss(logp, logp_b, t(r), clip=None)
        (grad,) = torch.autograd.grad(-loss, w)
        return grad.numpy()


def compare(seeds: int = 60, n: int = 2000, bandit_seed: int = 0) -> dict:
    """Per estimator: mean over seeds, standard error, bias z-scores, MSE vs the analytic gradient."""
    b = Bandit(seed=bandit_seed)
    g = b.analytic_gradient()
    out = {"analytic": g}
    for kind in ESTIMATORS:
        est = np.stack([b.estimate(kind, n, np.random.default_rng(1000 + s)) for s in range(seeds)])
        mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(seeds)
        out[kind] = {
            "mean": mean, "se": se,
            "max_abs_z": float(np.max(np.abs(mean - g) / np.maximum(se, 1e-12))),
            "bias_norm": float(np.linalg.norm(mean - g)),
            "mse": float(np.mean(np.sum((est - g) ** 2, axis=(1, 2)))),
        }
    return out


def main() -> None:
    res = compare()
    g = res["analytic"]
    print(f"analytic gradient ‖∇J‖ = {np.linalg.norm(g):.3f}  (rows ≥ k are exactly 0)")
    print(f"{'estimator':<14}{'‖bias‖':>10}{'max |z|':>10}{'MSE':>12}")
    for kind in ESTIMATORS:
        r = res[kind]
        print(f"{kind:<14}{r['bias_norm']:>10.3f}{r['max_abs_z']:>10.2f}{r['mse']:>12.3f}")


if __name__ == "__main__":
    main()
