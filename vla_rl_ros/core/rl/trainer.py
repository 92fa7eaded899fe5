"""Offline, likelihood-based RL of the action head on logged exploration episodes (``train-rl``).

:func:`train_rl` reads top to bottom:

1. **Samples** (:mod:`.samples`): one decision per executed chunk of every explored episode —
   the anchor observation, the executed tokens, the logged behaviour log-likelihood, the
   Monte-Carlo return (success absorbing).
2. **Frozen backbone**: prefix tokens and pooled features are computed once.
3. **Critic** (:mod:`.critic`): a cross-fitted value MLP on the privileged simulator features (when
   the simulator provides them) or the frozen features.
4. **Advantages** (:mod:`.advantages`): one estimator per ``RLConfig.advantage`` / ``baseline``;
   ``advantage world_model`` scores candidate chunks in a world model (:mod:`vla_rl_ros.core.wm`),
   and ``objective best_of_k`` replaces each decision's target by the model's best candidate.
5. **Head update** (:mod:`.objective`): per minibatch, μ_θ = head(prefix); log π_θ = Σ_executed
   log N_[lo,hi](a; μ_θ, σ²) (the explorer's exact truncated density); PPO-clipped ratio against
   the logged behaviour log-likelihood, plus ``kl_coef`` × KL(π_θ ‖ π_init) over the whole chunk.
   Per epoch: effective sample size, clip fraction, KL to the behaviour policy; early stop when
   the KL to behaviour exceeds ``target_kl``.
6. Writes ``config.json`` (the resolved :class:`~.config.RLConfig`), a new checkpoint version
   (+ ONNX, parity-checked), ``history.json``, ``rl.png`` and, epoch by epoch, TensorBoard event
   files (``tb/``: ``rl/<history key>``, :mod:`vla_rl_ros.core.scalars`).

Data-parallel under ``torchrun --nproc-per-node N … train-rl`` (gloo, :mod:`vla_rl_ros.core.distributed`;
without torchrun nothing changes). Steps 1–4 (samples, frozen features, critic, advantages and
their normalisation, the logged-likelihood check) run identically on every rank: they are
deterministic (seeded, the same thread count) and need the whole data set. In step 5 every rank
draws the same minibatch order from the same seeded generator and computes its share of each
global minibatch (rows ``rank::N``); every mean over the minibatch (the surrogate's weighted mean,
the weighted-regression mean, the KL to the initial head) is the share's sum over the *global*
minibatch's count or weight sum, computed by each rank from the global minibatch's samples, and
the gradients are summed across ranks, so a step is the single-process step up to float summation
order. The per-minibatch statistics and the per-epoch behaviour fit (KL to behaviour, ESS) are
summed over the ranks' shares, so the early stop is decided on the same global figures everywhere.
Rank 0 alone writes ``config.json``, the checkpoint, ONNX, history, plot and TensorBoard files;
the other ranks return None. (A head with dropout would draw its masks per share: statistically,
not bitwise, the single-process step.)

Every hyper-parameter is a field of :class:`~.config.RLConfig`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from vla_rl_ros.core.distributed import Dist, init_distributed
from vla_rl_ros.core.policy.checkpoint import load_checkpoint, save_checkpoint
from vla_rl_ros.core.policy.grounding import grounding_files, skill_embedder
from vla_rl_ros.core.rl.advantages import decision_weights, estimate_advantages
from vla_rl_ros.core.rl.config import RLConfig
from vla_rl_ros.core.rl.critic import fit_critic
from vla_rl_ros.core.rl.objective import (
    Samples, chunk_log_prob, dim_log_prob, gaussian_kl, global_stats, rl_objective,
)
from vla_rl_ros.core.rl.samples import Decisions, PrivilegedFn, load_decisions
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.core.scalars import ScalarLog

#: decisions per forward pass where no gradient is needed (memory only: the results do not depend on it)
FEATURE_BATCH = 256
EVAL_BATCH = 512


def train_rl(cfg: RLConfig, progress=True, privileged: PrivilegedFn | None = None,
             world_model=None) -> dict | None:
    """One offline RL update of ``cfg.init`` on ``cfg.data`` (module doc). ``privileged``: the
    simulator's critic features (``core/sim/task_features.episode_privileged_features``); None:
    the critic sees the frozen features only. ``world_model``: any
    :class:`~vla_rl_ros.core.wm.interface.WorldModel` for ``advantage world_model`` (default: the
    one in ``cfg.world_model``, loaded on the checkpoint's backbone). Under torchrun (module doc)
    the ranks other than 0 return None."""
    from tqdm import tqdm

    cfg.validate()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    dist = init_distributed()  # torchrun: this rank's share of every global minibatch (module doc)
    progress = progress and dist.main
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if dist.main:
        cfg.save(out / "config.json")  # the resolved configuration, next to the outputs
    t0 = time.time()
    model, config = load_checkpoint(cfg.init, joint_names=PANDA.joint_names)
    dist.broadcast_params(model)  # every rank starts from rank 0's weights
    dec, episodes, summary = load_decisions(cfg.data, model.cfg.horizon, model.cfg.cameras, cfg.gamma, progress,
                                            cfg.episode_ids, privileged,
                                            embed=skill_embedder(cfg.init, config.get("instructions")))
    pol = FrozenPolicy(model, dec, progress)
    critic = fit_critic(cfg, dec.ret, dec.episode, pol.features, pol.s_norm, dec.priv)
    model_adv, wm_info = None, None
    if cfg.advantage == "world_model":
        model_adv, wm_info = world_model_advantages(cfg, model, dec, pol, world_model, progress)
    adv, baseline, group_fraction = estimate_advantages(cfg, dec, episodes, critic, model_adv)
    weight, kept = decision_weights(cfg, dec, episodes)
    samples = make_samples(cfg, dec, adv, pol, weight)
    if cfg.objective == "best_of_k":
        samples, wm_info = best_of_k_samples(cfg, model, dec, pol, samples, world_model, progress)
    check = logged_likelihood_check(cfg, samples, pol)
    head, params = trainable_head(model, cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)  # the same minibatch order on every rank
    history, stopped_early = [], False
    bar = tqdm(range(cfg.epochs), desc="train-rl", disable=not progress, dynamic_ncols=True)
    with ScalarLog(out, enabled=cfg.tensorboard and dist.main) as scalars:
        for epoch in bar:
            order = torch.randperm(len(dec.ret), generator=gen)
            stats = []
            for i in range(0, len(order), cfg.batch_size):
                rows = order[i : i + cfg.batch_size]
                mine = dist.share(rows)  # alone: all of them
                whole = samples.rows(rows) if dist.world > 1 else None  # the global minibatch's normalisers
                loss, st, kl_base = rl_objective(pol.means(head, mine), samples.rows(mine), cfg, pol.lo, pol.hi,
                                                 whole)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                dist.sum_grads(params)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
                opt.step()
                st, kl = global_stats(st, float(kl_base.detach()), dist)
                stats.append((st.loss, st.clip_fraction, st.ess, kl))
            h = epoch_record(epoch, stats, behaviour_fit(cfg, head, samples, pol, dist), critic.value_loss)
            history.append(h)
            scalars.add_dict("rl", h, h["epoch"], skip=("epoch",))
            bar.set_postfix(ess=f"{h['ess']:.2f}", clip=f"{h['clip_fraction']:.2f}", kl=f"{h['kl_behaviour']:.3f}")
            if h["kl_behaviour"] > cfg.target_kl:  # the same global figure on every rank
                stopped_early = True
                break
    head.eval()
    if not dist.main:  # rank 0 alone writes the outputs
        dist.close()
        return None
    res_meta = {
        "trained_by": "vla-rl-ros train-rl", "args": asdict(cfg), "init": str(Path(cfg.init).resolve()),
        "init_version": int(config.get("version", 0)), "decisions": len(dec.ret), "episodes": summary["episodes"],
        "episode_success_rate": summary["successes"] / max(1, summary["episodes"]),
        "behaviour_versions": sorted(set(int(v) for v in dec.version)), **check,
        "value_loss": critic.value_loss, "baseline": baseline, "critic": critic.kind, "advantage": cfg.advantage,
        "group_fraction": group_fraction, "weights": kept, "world_model": wm_info, "objective": cfg.objective,
        "mu_shift_sigma": mu_shift(head, samples, pol), "stopped_early": stopped_early, "history": history,
        "train_seconds": time.time() - t0, "params_trained": sum(p.numel() for p in params),
    }
    result = save_outputs(cfg, model, config, summary, res_meta, history)
    dist.close()
    return result


def world_model_advantages(cfg: RLConfig, model, dec: Decisions, pol: "FrozenPolicy", world_model=None,
                           progress=True) -> tuple[torch.Tensor, dict]:
    """The world model's advantages of every decision (``core/wm/scoring.model_advantages``)."""
    from vla_rl_ros.core.wm.scoring import executed_chunk, model_advantages

    wm = world_model or load_world_model(cfg, model)
    k = int(wm.chunk_len)
    z = encode_decisions(wm, dec)
    executed = executed_chunk(dec.actions, dec.mask, k)
    mu, sigma = executed_chunk(dec.mu_b, dec.mask, k), executed_chunk(dec.sigma, dec.mask, k)
    rho = dec.rho if dec.rho is not None else np.zeros(len(dec.ret))
    adv, info = model_advantages(wm, z, executed, mu, sigma, rho, pol.lo.numpy().astype(np.float64),
                                 pol.hi.numpy().astype(np.float64), cfg.wm_candidates, cfg.wm_branch, cfg.wm_penalty,
                                 cfg.seed, progress)
    return adv, {"source": cfg.world_model or type(wm).__name__, **info}


def best_of_k_samples(cfg: RLConfig, model, dec: Decisions, pol: "FrozenPolicy", s: Samples, world_model=None,
                      progress=True) -> tuple[Samples, dict]:
    """``s`` with the executed actions replaced by the world model's best-of-K chunks (at the
    executed token positions) and the weights set to where they beat μ by ``cfg.wm_margin``."""
    import dataclasses

    from vla_rl_ros.core.wm.scoring import best_of_k, executed_chunk

    wm = world_model or load_world_model(cfg, model)
    k = int(wm.chunk_len)
    z = encode_decisions(wm, dec)
    with torch.no_grad():
        mu_now = s.mu_base.numpy()  # the initial head's μ (= the behaviour's when it collected the data)
    mu, sigma = executed_chunk(mu_now, dec.mask, k), executed_chunk(dec.sigma, dec.mask, k)
    rho = dec.rho if dec.rho is not None else np.zeros(len(dec.ret))
    targets, gain, info = best_of_k(wm, z, mu, sigma, rho, pol.lo.numpy().astype(np.float64),
                                    pol.hi.numpy().astype(np.float64), cfg.wm_candidates, cfg.wm_scale, cfg.wm_branch,
                                    cfg.wm_penalty, cfg.seed, progress)
    actions = s.actions.clone()
    for i in range(len(actions)):  # the first k executed positions take the target's tokens
        pos = np.flatnonzero(dec.mask[i] > 0)[:k]
        actions[i, pos] = torch.from_numpy(targets[i, : len(pos)]).float()
    w = torch.from_numpy((gain > cfg.wm_margin).astype(np.float32))
    if s.weight is not None:
        w = w * s.weight
    if not bool((w > 0).any()):
        raise ValueError(f"no candidate beats μ by more than wm_margin {cfg.wm_margin:g} in the world model "
                         f"(largest gain {gain.max():.3g}): nothing to imitate")
    info = {"source": cfg.world_model or type(wm).__name__, **info, "decisions_imitated": int((w > 0).sum())}
    return dataclasses.replace(s, actions=actions, weight=w), info


def load_world_model(cfg: RLConfig, model):
    from vla_rl_ros.core.wm.latent import LatentWorldModel

    return LatentWorldModel.load(cfg.world_model, model)


def encode_decisions(wm, dec: Decisions) -> torch.Tensor:
    """The world model's latent of every decision's anchor observation."""
    t = torch.from_numpy
    priv = getattr(wm, "uses_privileged", False)
    if priv and dec.priv is None:
        raise ValueError("the world model's latent holds the simulator's privileged task features, which these "
                         "episodes lack: train one with train-wm --privileged off")
    out = []
    for i in range(0, len(dec.ret), FEATURE_BATCH):
        sl = slice(i, i + FEATURE_BATCH)
        extra = {"privileged": t(dec.priv[sl]).float()} if priv else {}
        out.append(wm.encode(t(dec.images[sl]), t(dec.state[sl]), t(dec.lang[sl]), **extra))
    return torch.cat(out)


class FrozenPolicy:
    """The initial model with its backbone frozen: the prefix tokens and pooled features of every
    decision, computed once, and the action head's means μ for any rows."""

    def __init__(self, model, dec: Decisions, progress=True):
        from tqdm import tqdm

        self.model, N = model, len(dec.ret)
        model.eval()
        prefixes, feats = [], []
        with torch.no_grad():
            for i in tqdm(range(0, N, FEATURE_BATCH), desc="backbone features", disable=not progress, leave=False):
                sl = slice(i, i + FEATURE_BATCH)
                p = model.prefix(torch.from_numpy(dec.images[sl]), torch.from_numpy(dec.state[sl]),
                                 torch.from_numpy(dec.lang[sl]))
                prefixes.append(p)
                feats.append(torch.cat([p[:, 0], p[:, 2:].mean(1)], -1))
        self.prefix = torch.cat(prefixes)
        self.state = torch.from_numpy(dec.state)
        self.s_norm = (self.state - model.state_mean) / model.state_std
        self.features = torch.cat([torch.cat(feats), self.s_norm], -1)  # the critic's non-privileged inputs
        self.lo = torch.tensor(PANDA.lower, dtype=torch.float32)
        self.hi = torch.tensor(PANDA.upper, dtype=torch.float32)

    def means(self, head, rows) -> torch.Tensor:
        """(B, H, D) absolute action means of ``head`` at ``rows``."""
        d = head(self.prefix[rows]) * self.model.delta_std + self.model.delta_mean
        return self.state[rows][:, None, : self.model.cfg.action_dim] + d

    def all_means(self, head) -> torch.Tensor:
        N = len(self.prefix)
        return torch.cat([self.means(head, torch.arange(i, min(i + EVAL_BATCH, N))) for i in range(0, N, EVAL_BATCH)])

    def rows_means(self, head, rows: torch.Tensor) -> torch.Tensor:
        """:meth:`means` at ``rows``, ``EVAL_BATCH`` at a time."""
        return torch.cat([self.means(head, rows[i : i + EVAL_BATCH]) for i in range(0, max(len(rows), 1), EVAL_BATCH)])


def make_samples(cfg: RLConfig, dec: Decisions, adv: torch.Tensor, pol: FrozenPolicy,
                 weight: torch.Tensor | None = None) -> Samples:
    """The objective's tensors: logged actions, σ, masks and likelihoods, the advantages, the
    decisions' weights, and the initial head's means (the KL anchor) with the σ of that KL."""
    acts, sig, mask = (torch.from_numpy(x) for x in (dec.actions, dec.sigma, dec.mask))
    mu_b = torch.from_numpy(dec.mu_b)
    base_head = copy.deepcopy(pol.model.head).eval()
    for p_ in base_head.parameters():
        p_.requires_grad_(False)
    with torch.no_grad():
        mu_base = pol.all_means(base_head)
        # per-factor behaviour log-densities from the logged μ_b and σ (the behaviour of --ratio dim)
        rho = None if dec.rho is None else torch.from_numpy(dec.rho).float()
        tau = None if dec.grip_tau is None else torch.from_numpy(dec.grip_tau).float()
        lpb_dim, _ = dim_log_prob(torch.minimum(torch.maximum(mu_b, pol.lo), pol.hi), acts, sig, mask, pol.lo, pol.hi,
                                  rho, tau)
    sig_ref = sig[:, :1].expand_as(sig)  # σ of the first token stands in for the unexecuted ones
    # dimensions that were not explored (σ = 0, e.g. the gripper) get no likelihood gradient; the
    # regulariser holds them to the base head in units of anchor_sigma
    sig_ref = torch.where(sig_ref > 0, sig_ref, torch.full_like(sig_ref, cfg.anchor_sigma))
    if tau is not None and bool((tau > 0).any()):  # a discretely explored gripper moves on the scale of its τ
        g = torch.where(tau > 0, tau, sig_ref[:, 0, -1])
        sig_ref = torch.cat([sig_ref[..., :-1], g[:, None, None].expand(-1, sig_ref.shape[1], 1)], -1)
    return Samples(actions=acts, sigma=sig, mask=mask, logp_b=torch.from_numpy(dec.logp_b).float(), adv=adv,
                   mu_b=mu_b, mu_base=mu_base, sig_ref=sig_ref, logp_b_dim=lpb_dim, rho=rho, weight=weight,
                   grip_tau=tau)


def logged_likelihood_check(cfg: RLConfig, s: Samples, pol: FrozenPolicy) -> dict:
    """Row by row: the logged behaviour log-likelihood against (a) the one recomputed from the
    logged μ_b, σ and actions (a logging bug), (b) the initial head's (≈ 0 when the data were
    collected by this very checkpoint: ratio 1 at the start). ``--ratio dim`` uses (a)'s factors as
    the behaviour policy and refuses data whose median gap exceeds ``cfg.logp_check_tol``."""
    with torch.no_grad():
        lp0 = chunk_log_prob(torch.clamp(s.mu_base, pol.lo, pol.hi), s.actions, s.sigma, s.mask, pol.lo, pol.hi,
                             s.rho, s.grip_tau)
        init_gap = (lp0 - s.logp_b).abs()
        logged_gap = (s.logp_b_dim.sum(dim=(-1, -2)) - s.logp_b).abs()
    if cfg.ratio == "dim" and float(logged_gap.median()) > cfg.logp_check_tol:
        raise ValueError(f"logged behaviour log-likelihood disagrees with the logged μ/σ "
                         f"(median gap {float(logged_gap.median()):.3g} nats): cannot use --ratio dim")
    return {"init_log_ratio_median": float(init_gap.median()), "init_log_ratio_max": float(init_gap.max()),
            "logged_logp_gap_max": float(logged_gap.max())}


def trainable_head(model, cfg: RLConfig) -> tuple[torch.nn.Module, list]:
    """The action head in training mode and the parameters ``cfg.trainable`` names (only those
    require gradients)."""
    head = model.head
    head.train()
    params = list(head.parameters() if cfg.trainable == "head" else head.out.parameters())
    for p_ in head.parameters():
        p_.requires_grad_(False)
    for p_ in params:
        p_.requires_grad_(True)
    return head, params


def behaviour_fit(cfg: RLConfig, head, s: Samples, pol: FrozenPolicy, dist: Dist = Dist()) -> dict:
    """Over all decisions: KL to the logged behaviour (nats per decision) and the effective sample
    size / n of the likelihood ratios. Data-parallel: each rank evaluates its share of the
    decisions and the sums are added over the ranks (the same figures on every rank)."""
    with torch.no_grad():
        if dist.world == 1:
            mu_all = pol.all_means(head)
            kl_b = float(gaussian_kl(mu_all, s.mu_b, s.sigma, s.mask).mean())
            lp = chunk_log_prob(torch.clamp(mu_all, pol.lo, pol.hi), s.actions, s.sigma, s.mask, pol.lo, pol.hi,
                                s.rho, s.grip_tau)
            r = torch.exp(torch.clamp(lp - s.logp_b, max=cfg.log_ratio_max))
            ess = float(r.sum() ** 2 / (len(r) * (r**2).sum()))
            return {"ess": ess, "kl_behaviour": kl_b}
        rows = dist.share(torch.arange(len(s.adv)))
        mu, sh = pol.rows_means(head, rows), s.rows(rows)
        lp = chunk_log_prob(torch.clamp(mu, pol.lo, pol.hi), sh.actions, sh.sigma, sh.mask, pol.lo, pol.hi, sh.rho,
                            sh.grip_tau)
        r = torch.exp(torch.clamp(lp - sh.logp_b, max=cfg.log_ratio_max)).double()
        kl_sum, r1, r2 = dist.sum(torch.stack([gaussian_kl(mu, sh.mu_b, sh.sigma, sh.mask).double().sum(),
                                               r.sum(), (r**2).sum()])).tolist()
        n = len(s.adv)
    return {"ess": r1**2 / (n * r2), "kl_behaviour": kl_sum / n}


def mu_shift(head, s: Samples, pol: FrozenPolicy) -> float:
    """The update's step: mean |μ_new − μ_init| over executed explored entries, in units of σ."""
    with torch.no_grad():
        mu = pol.all_means(head)
        on = (s.sigma > 0) & (s.mask[..., None] > 0)
        z = (mu - s.mu_base).abs() / torch.where(on, s.sigma, torch.ones_like(s.sigma))
        return float(z[on].mean()) if bool(on.any()) else 0.0


def epoch_record(epoch: int, stats: list[tuple], fit: dict, value_loss: float) -> dict:
    """One ``history`` entry from the minibatches' (loss, clip fraction, ESS, KL to init)."""
    loss, clip, ess_mb, kl_base = (float(np.mean(c)) for c in zip(*stats))
    return {"epoch": epoch + 1, "policy_loss": loss, "clip_fraction": clip, "ess": fit["ess"], "ess_minibatch": ess_mb,
            "kl_behaviour": fit["kl_behaviour"], "kl_base": kl_base, "value_loss": value_loss}


def save_outputs(cfg: RLConfig, model, config: dict, summary: dict, res_meta: dict, history: list) -> dict:
    """The new checkpoint version (+ ONNX, parity-checked), ``history.json`` and ``rl.png``."""
    out = Path(cfg.out)
    version = cfg.version or res_meta["init_version"] + 1
    instructions = dict(config.get("instructions") or {})
    instructions.update(summary["instructions"])
    extra = dict(grounding_files(cfg.init))  # the new version understands what its parent did
    if cfg.export_onnx:
        from vla_rl_ros.core.policy.backends import (
            OnnxRuntimeBackend, TorchBackend, example_inputs, export_onnx, parity,
        )

        onnx_path = export_onnx(model, out / "model.onnx")
        res_meta["onnx_parity_max_abs"] = parity(TorchBackend(model), OnnxRuntimeBackend(onnx_path),
                                                  example_inputs(model, 2, seed=1))
        extra["model.onnx"] = onnx_path
    ckpt = save_checkpoint(model, out / "checkpoint", version=version, meta=res_meta,
                           instructions=instructions, extra_files=extra)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    plot_rl(history, out / "rl.png")
    return {"checkpoint": str(ckpt), "version": version, **res_meta}


def plot_rl(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, key, title in zip(axes, ("ess", "clip_fraction", "kl_behaviour", "policy_loss"),
                              ("effective sample size / n", "clip fraction", "KL to behaviour (nats/decision)",
                               "policy loss")):
        ax.plot(ep, [h[key] for h in history], "o-")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(f"train-rl (value loss {history[-1]['value_loss']:.3f}, normalised MSE)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
