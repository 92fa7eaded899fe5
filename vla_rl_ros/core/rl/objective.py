"""The likelihood-ratio policy objective over executed action tokens.

One RL sample is one *decision*: the observation a chunk was computed from (its anchor), the
tokens of that chunk that were actually executed (``mask``), the executed actions, σ, the
behaviour log-likelihood logged at collection (summed over the executed tokens only) and an
advantage. With the current head's mean μ_θ

    log π_θ(a|o) = Σ_{i executed} log N_[lo,hi](a_i; μ_θ(o)_i, σ_i²)
    r = exp(log π_θ − log π_b)

and the surrogate ``r · A`` has gradient ``r ∇log π_θ · A``, the unbiased importance-weighted
policy gradient; the PPO clip ``min(r A, clip(r, 1±ε) A)`` trades bias for variance. Tokens that
were planned but never executed never touched the world: they are excluded by ``mask``.

Ratio granularity (``train-rl --ratio``). ``chunk``: one ratio per decision, the product over its
executed tokens and explored joints (7 factors when the policy replans every tick, 7·k when k
tokens of a chunk are executed). A mean shift of δσ toward the sample on every factor moves the
log-ratio by ≈ δ Σ|z|, so the ±ε clip binds once δ ≈ ε / Σ|z|: the trust region shrinks with
the number of factors. ``dim``: one ratio per executed (token, joint) factor, each clipped on its
own, as token-level PPO does for language models; the surrogate's gradient at the behaviour policy
is the same policy gradient (Σ ∇log π_i · A, up to the 1/n average), and each factor may move
≈ ε σ / |z| before its clip binds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from vla_rl_ros.core.rl.config import RLConfig
from vla_rl_ros.core.rl.exploration import (
    chain_logpdf_torch, gaussian_logpdf_torch, gripper_logp, truncnorm_logpdf_torch,
)


def first_executed(mask: torch.Tensor) -> torch.Tensor:
    """(B, H) bool: the first executed token of each decision (where its noise chain starts)."""
    on = mask > 0
    before = torch.zeros_like(on)
    before[:, 1:] = on[:, :-1]
    return on & ~before


def dim_log_prob(mu: torch.Tensor, actions: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor,
                 lower: torch.Tensor | None = None, upper: torch.Tensor | None = None,
                 rho: torch.Tensor | None = None, grip_tau: torch.Tensor | None = None):
    """Per (token, dimension) log-density and where it counts: (B, H, D) x3, mask (B, H) ->
    ((B, H, D) log-density, zero off the executed explored entries; (B, H, D) bool of those entries).

    ``rho`` (B,): the noise correlation each decision was explored with (coherent AR(1) noise over
    its tokens, :mod:`.exploration`); each executed token is then scored by its conditional given
    the previous executed token. None or 0: white noise, every token on its own. ``grip_tau`` (B,):
    the gripper's (last dimension's) discrete-exploration temperature of each decision; where > 0
    its entries are the Bernoulli close/open log-probabilities (:func:`.exploration.gripper_logp`)."""
    on = sigma > 0  # σ = 0: a dimension executed as μ (not explored), outside the likelihood
    keep = explored_entries(sigma, mask, grip_tau)
    sigma = torch.where(on, sigma, torch.ones_like(sigma))
    if rho is not None and bool((rho > 0).any()):
        lo = lower.expand_as(mu) if lower is not None else torch.full_like(mu, -float("inf"))
        hi = upper.expand_as(mu) if upper is not None else torch.full_like(mu, float("inf"))
        lp = chain_logpdf_torch(actions, mu, sigma, lo, hi, rho, first_executed(mask))
    elif lower is not None and upper is not None:
        lp = truncnorm_logpdf_torch(actions, mu, sigma, lower.expand_as(mu), upper.expand_as(mu))
    else:
        lp = gaussian_logpdf_torch(actions, mu, sigma)
    if grip_tau is not None and bool((grip_tau > 0).any()):
        if lower is None or upper is None:
            raise ValueError("the discrete gripper's likelihood needs the joint limits")
        g = grip_tau > 0
        tau = torch.where(g, grip_tau, torch.ones_like(grip_tau)).to(mu.dtype)[:, None]
        lp_g = gripper_logp(actions[..., -1], mu[..., -1], float(lower[-1]), float(upper[-1]), tau)
        on_g = (mask > 0) & g[:, None]
        lp = torch.cat([lp[..., :-1], torch.where(on_g, lp_g, lp[..., -1])[..., None]], -1)
    return torch.where(keep, lp, torch.zeros_like(lp)), keep


def explored_entries(sigma: torch.Tensor, mask: torch.Tensor, grip_tau: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, D) bool: the executed (token, dimension) entries with a likelihood — explored with
    σ > 0, or the discretely explored gripper (``grip_tau`` > 0); the factors of :func:`dim_log_prob`
    (which depend on the logged data only, not on μ)."""
    keep = (mask[..., None] > 0) & (sigma > 0)
    if grip_tau is not None and bool((grip_tau > 0).any()):
        on_g = (mask > 0) & (grip_tau > 0)[:, None]
        keep = torch.cat([keep[..., :-1], (keep[..., -1] | on_g)[..., None]], -1)
    return keep


def chunk_log_prob(mu: torch.Tensor, actions: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor,
                   lower: torch.Tensor | None = None, upper: torch.Tensor | None = None,
                   rho: torch.Tensor | None = None, grip_tau: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over executed tokens of the per-dimension log-density: (B, H, D) x3, mask (B, H) -> (B,).

    With ``lower``/``upper`` (D,) the density is the truncated normal the explorer samples from;
    ``rho``, ``grip_tau`` as in :func:`dim_log_prob`.
    """
    return dim_log_prob(mu, actions, sigma, mask, lower, upper, rho, grip_tau)[0].sum(dim=(-1, -2))


@dataclass
class PolicyLossStats:
    loss: float
    clip_fraction: float
    ess: float  # effective sample size / n, (Σr)² / (n Σr²)
    ratio_mean: float
    ratio_max: float
    # the sums behind them, which the ranks of a data-parallel update add up (:func:`global_stats`)
    n: int = 0  # ratios in the batch (one per decision, or per factor with ratio dim)
    clipped: int = 0  # of them clipped
    ess_sums: tuple[float, float] = (0.0, 0.0)  # Σx, Σx² of the ESS's x: the ratios (the weights: awr, filtered)
    ratio_sum: float = 0.0


def _stats(loss, r: torch.Tensor, clipped: torch.Tensor, x: torch.Tensor) -> PolicyLossStats:
    """The statistics of a batch's ratios ``r`` (``clipped``: which were clipped) and ESS variable ``x``."""
    ess = float((x.sum() ** 2) / (x.numel() * (x**2).sum()).clamp(min=1e-12))
    return PolicyLossStats(float(loss), float(clipped.float().mean()), ess, float(r.mean()),
                           float(r.max()) if r.numel() else 0.0,  # a rank's share may be empty
                           r.numel(), int(clipped.sum()), (float(x.sum()), float((x**2).sum())), float(r.sum()))


def global_stats(st: PolicyLossStats, kl_base: float, dist) -> tuple[PolicyLossStats, float]:
    """The statistics of the global minibatch from each rank's share's (``dist``: a
    :class:`~vla_rl_ros.core.distributed.Dist`; the losses are already normalised by the global
    batch, so they add up). Alone: ``st`` and ``kl_base`` unchanged."""
    if dist.world == 1:
        return st, kl_base
    t = dist.sum(torch.tensor([st.loss, kl_base, st.n, st.clipped, *st.ess_sums, st.ratio_sum], dtype=torch.float64))
    loss, kl, n, clipped, x1, x2, r1 = t.tolist()
    r_max = float(dist.max(torch.tensor([st.ratio_max], dtype=torch.float64)))
    n = int(round(n))
    ess = x1**2 / max(n * x2, 1e-12)
    return PolicyLossStats(loss, clipped / max(n, 1), ess, r1 / max(n, 1), r_max, n, int(round(clipped)), (x1, x2),
                           r1), kl


def policy_loss(logp_new: torch.Tensor, logp_behaviour: torch.Tensor, advantages: torch.Tensor,
                clip: float | None = 0.2, weights: torch.Tensor | None = None,
                log_ratio_max: float = 20.0, norm: torch.Tensor | None = None):
    """Surrogate loss (to minimise) and its statistics.

    ``clip=None`` gives the plain importance-weighted estimator (unbiased); otherwise PPO's
    pessimistic clipped surrogate. ``log_ratio_max``: the log-ratio is clamped from above before
    ``exp`` (an overflow guard; ``RLConfig.log_ratio_max``). ``norm``: the divisor of the weighted
    sum, the weights' sum over the *global* minibatch when this batch is a data-parallel rank's
    share of it (None: this batch's own weights' sum, the weighted mean).
    """
    log_ratio = logp_new - logp_behaviour.detach()
    ratio = torch.exp(torch.clamp(log_ratio, max=log_ratio_max))
    adv = advantages.detach()
    surr = ratio * adv
    clipped = torch.zeros_like(ratio, dtype=torch.bool)
    if clip is not None:
        rc = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
        surr = torch.minimum(surr, rc * adv)
        clipped = (ratio - rc).abs() > 1e-8
    w = torch.ones_like(surr) if weights is None else weights
    loss = -(surr * w).sum() / (w.sum().clamp(min=1e-8) if norm is None else norm)
    with torch.no_grad():
        r = ratio.detach()
        stats = _stats(loss, r, clipped, r)
    return loss, stats


def gaussian_kl(mu_a: torch.Tensor, mu_b: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(μ_a, σ²) ‖ N(μ_b, σ²)) summed over tokens (masked) and dims: (B, H, D) -> (B,).
    Dimensions with σ = 0 (not explored) are left out."""
    on = sigma > 0
    k = torch.where(on, 0.5 * ((mu_a - mu_b) / torch.where(on, sigma, torch.ones_like(sigma))) ** 2,
                    torch.zeros_like(mu_a))
    if mask is not None:
        k = k * mask[..., None]
    return k.sum(dim=(-1, -2))


@dataclass
class Samples:
    """What the objective needs of each decision (tensors; the first dimension is the decision)."""

    actions: torch.Tensor  # (N, H, D) executed actions (padded)
    sigma: torch.Tensor  # (N, H, D) exploration σ (padding 1, not explored 0)
    mask: torch.Tensor  # (N, H) 1 = executed token
    logp_b: torch.Tensor  # (N,) logged behaviour log-likelihood (chunk ratio)
    adv: torch.Tensor  # (N,) advantages
    mu_b: torch.Tensor  # (N, H, D) logged behaviour mean
    mu_base: torch.Tensor  # (N, H, D) the initial head's mean (KL anchor)
    sig_ref: torch.Tensor  # (N, H, D) σ of the KL to the initial head (every token, every dimension)
    logp_b_dim: torch.Tensor | None = None  # (N, H, D) per-factor behaviour log-densities (ratio dim)
    rho: torch.Tensor | None = None  # (N,) noise correlation over each decision's tokens (None: white)
    weight: torch.Tensor | None = None  # (N,) weight of each decision in the update (None: 1)
    grip_tau: torch.Tensor | None = None  # (N,) discrete gripper exploration temperature (None / 0: not explored)

    def rows(self, idx) -> "Samples":
        return Samples(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[idx]
                          for f in fields(self)})


def regression_weights(s: Samples, cfg: RLConfig, dtype: torch.dtype) -> torch.Tensor:
    """(B,) weights of the weighted maximum-likelihood objectives (awr, filtered, best_of_k);
    ``dtype``: that of the ones where the decisions carry no weight."""
    w = torch.ones(len(s.adv), dtype=dtype) if s.weight is None else s.weight
    if cfg.objective == "awr":
        w = w * torch.exp(torch.clamp(s.adv / cfg.awr_beta, max=math.log(cfg.awr_max_weight)))
    return w


def rl_objective(mu: torch.Tensor, s: Samples, cfg: RLConfig, lower: torch.Tensor, upper: torch.Tensor,
                 whole: Samples | None = None):
    """The loss ``train_rl`` minimises on a minibatch, given the current head's means ``mu``
    (B, H, D), plus ``cfg.kl_coef`` × KL to the initial head. Returns (loss, :class:`PolicyLossStats`,
    KL to the initial head).

    ``whole``: the global minibatch of which ``s`` is a data-parallel rank's share (``train_rl``
    under torchrun, :mod:`vla_rl_ros.core.distributed`). Every mean over the batch is then this
    share's sum divided by the global batch's count or weight sum — computed here from ``whole``,
    which every rank holds, so no communication — and the ranks' losses and gradients add up to
    the single-process ones (the statistics: :func:`global_stats`). None: ``s`` is the whole batch.

    ``cfg.objective``: ``ratio`` — the likelihood-ratio surrogate over executed tokens with the
    truncated density (``cfg.ratio``, ``cfg.clip``, ``cfg.log_ratio_max``); ``awr`` and
    ``filtered`` — weighted maximum likelihood of the executed actions (per explored factor), the
    weights exp(A/β) clamped to ``cfg.awr_max_weight`` (AWR) or the decisions' own weights
    (:func:`.advantages.decision_weights`: successes of mixed groups); ``best_of_k`` — the same with
    ``s.actions`` the world model's best candidates and ``s.weight`` where they beat μ."""
    mu_c = torch.minimum(torch.maximum(mu, lower), upper)
    if cfg.objective in ("awr", "filtered", "best_of_k"):
        lp, keep = dim_log_prob(mu_c, s.actions, s.sigma, s.mask, lower, upper, s.rho, s.grip_tau)
        per_factor = lp.sum(dim=(-1, -2)) / keep.sum(dim=(-1, -2)).clamp(min=1)
        w = regression_weights(s, cfg, per_factor.dtype)
        norm = (w if whole is None else regression_weights(whole, cfg, per_factor.dtype)).sum().clamp(min=1e-8)
        loss_pi = -(w.detach() * per_factor).sum() / norm
        with torch.no_grad():
            r = torch.exp(torch.clamp(lp.sum(dim=(-1, -2)) - s.logp_b, max=cfg.log_ratio_max))
            st = _stats(loss_pi, r, torch.zeros_like(r, dtype=torch.bool), w)
    elif cfg.ratio == "dim":
        lp, keep = dim_log_prob(mu_c, s.actions, s.sigma, s.mask, lower, upper, s.rho, s.grip_tau)
        a_dim = s.adv[:, None, None].expand_as(lp)
        w_dim = None if s.weight is None else s.weight[:, None, None].expand_as(lp)[keep]
        norm = None
        if whole is not None:  # the global batch's explored factors (their weights' sum)
            k = explored_entries(whole.sigma, whole.mask, whole.grip_tau)
            norm = (k.sum().float() if whole.weight is None else
                    whole.weight[:, None, None].expand_as(k)[k].sum()).clamp(min=1e-8)
        loss_pi, st = policy_loss(lp[keep], s.logp_b_dim[keep], a_dim[keep], clip=cfg.clip, weights=w_dim,
                                  log_ratio_max=cfg.log_ratio_max, norm=norm)
    elif cfg.ratio == "chunk":
        lp = chunk_log_prob(mu_c, s.actions, s.sigma, s.mask, lower, upper, s.rho, s.grip_tau)
        norm = None
        if whole is not None:
            norm = (torch.tensor(float(len(whole.adv))) if whole.weight is None else whole.weight.sum()).clamp(min=1e-8)
        loss_pi, st = policy_loss(lp, s.logp_b, s.adv, clip=cfg.clip, weights=s.weight,
                                  log_ratio_max=cfg.log_ratio_max, norm=norm)
    else:
        raise ValueError(f"ratio must be chunk or dim, got {cfg.ratio!r}")
    kl = gaussian_kl(mu, s.mu_base, s.sig_ref)
    kl_base = kl.mean() if whole is None else kl.sum() / len(whole.adv)
    return loss_pi + cfg.kl_coef * kl_base, st, kl_base
