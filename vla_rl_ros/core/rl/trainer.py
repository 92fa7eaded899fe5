"""Offline, likelihood-based RL of the action head on logged exploration episodes.

Pipeline (``vla-rl-ros train-rl``):

1. **Decisions from frames.** Frames of one chunk share ``rl.chunk_id``; the first of them,
   with ``rl.chunk_index == k0`` (0 when the policy answers within a tick, more when it lags),
   executes token k0, and the frame k0 ticks earlier is the chunk's anchor (its observation is
   the one μ was computed from); the frames k0, k0+1, … are the tokens actually executed. Unexecuted
   tokens never appear in the log and never in the likelihood. Frames logged without noise
   (σ = 0: deploy mode, the expert) carry no likelihood and are skipped; single dimensions with
   σ = 0 (the gripper, when not explored) executed μ and are left out of the likelihood.
2. **Returns.** The sim's shaped reward is in [0, 1] per step and an episode ends 3 steps after
   success, so a success would *lose* the reward a hovering failure keeps collecting; success is
   therefore treated as absorbing with reward 1 forever: a terminal bonus γ/(1−γ).
   Monte-Carlo discounted returns G_t.
3. **Value function** on the frozen backbone features (+ normalised state): an MLP fitted to
   G by cross-fitting (two halves by episode, each half's values predicted by the model trained
   on the other half), so the advantage A = G − V is not fitted to its own noise. When the
   held-out MSE (in units of the return variance) is not below 1 — the MLP generalises worse
   than a constant — the mean return is the baseline instead (reported as ``baseline``).
   Its inputs are the privileged simulator state when the data has it (``critic``, see
   :mod:`.critic`), else the features; ``advantage="gae"`` replaces G − baseline by TD(λ)
   advantages of that critic.
4. **Head update.** Backbone frozen: prefix tokens are computed once. Per minibatch,
   μ_θ = head(prefix); log π_θ = Σ_executed log N_[lo,hi](a; μ_θ, σ²) (the explorer's exact
   truncated density); PPO-clipped ratio against the logged behaviour log-likelihood
   (advantages normalised), plus ``kl_coef`` × KL(π_θ ‖ π_base) over the whole chunk toward the
   initial head. Per epoch: effective sample size, clip fraction, KL to the behaviour policy,
   value loss; early stop when the KL to behaviour exceeds ``target_kl``.
5. Writes a new checkpoint version (+ ONNX, parity-checked), ``history.json`` and ``rl.png``.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vla_rl_ros.core.data import schema as S
from vla_rl_ros.core.policy.checkpoint import load_checkpoint, save_checkpoint
from vla_rl_ros.core.policy.text import InstructionEncoder
from vla_rl_ros.core.rl.config import RLConfig
from vla_rl_ros.core.rl.objective import chunk_log_prob, dim_log_prob, gaussian_kl, policy_loss
from vla_rl_ros.core.robot import PANDA


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


def returns(rewards: np.ndarray, success: bool, gamma: float) -> np.ndarray:
    """Discounted returns with success treated as absorbing (reward 1 forever)."""
    g = gamma / (1.0 - gamma) if success else 0.0
    out = np.zeros(len(rewards), dtype=np.float64)
    for t in range(len(rewards) - 1, -1, -1):
        g = float(rewards[t]) + gamma * g
        out[t] = g
    return out


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


def episode_gae(dec: "Decisions", values: np.ndarray, meta: dict, gamma: float, lam: float) -> np.ndarray:
    """TD(λ) advantages of every decision, episode by episode (:func:`.critic.gae`)."""
    from vla_rl_ros.core.rl.critic import gae

    adv = np.zeros(len(values))
    for e in np.unique(dec.episode):
        rows = np.flatnonzero(dec.episode == e)
        rows = rows[np.argsort(dec.t[rows])]
        _, success = meta["ep_returns"][int(e)]
        adv[rows] = gae(values[rows], dec.t[rows], meta["ep_rewards"][int(e)], success, gamma, lam)
    return adv


def decisions_from_episode(d: dict, horizon: int, cameras, gamma: float) -> list[dict]:
    """Split one logged episode into decisions (see module doc). ``d`` as from the reader."""
    sigma = np.asarray(d[S.SIGMA], dtype=np.float64)
    idx = np.asarray(d[S.CHUNK_INDEX]).astype(np.int64)
    cid = np.asarray(d[S.CHUNK_ID]).astype(np.int64)
    rew = np.asarray(d[S.REWARD], dtype=np.float64)
    success = bool(np.any(np.asarray(d[S.SUCCESS])))
    G = returns(rew, success, gamma)
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
        out.append({"t": t, "n": n, "anchor": anchor, "k0": k0, "ret": G[t]})
        t += n
    rows = []
    logp = np.asarray(d[S.LOG_PROB], dtype=np.float64)
    for dec in out:
        t, n, a, k0 = dec["t"], dec["n"], dec["anchor"], dec["k0"]
        dof = sigma.shape[1]
        acts = np.zeros((horizon, dof))
        mu = np.zeros((horizon, dof))
        sig = np.ones((horizon, dof))
        mask = np.zeros(horizon)
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
            "ret": dec["ret"], "version": int(np.asarray(d[S.POLICY_VERSION])[t]), "t": t,
        })
        if S.ENV_STATE in d:
            from vla_rl_ros.core.rl.critic import privileged_features

            env = np.asarray(d[S.ENV_STATE])
            try:
                rows[-1]["priv"] = privileged_features(env[a], env[0], str(d["task"]), float(d[S.STATE][a][-1]), a)
            except ValueError:  # not one of this simulator's tasks / layouts: no privileged critic
                pass
    return rows


def load_decisions(roots, horizon: int, cameras, gamma: float, progress=True,
                   episodes: str = "") -> tuple[Decisions, dict]:
    """Decisions of every explored episode of ``roots`` (``episodes``: a selection of each
    dataset's episodes, see :func:`~vla_rl_ros.core.data.reader.parse_episode_list`)."""
    from tqdm import tqdm

    from vla_rl_ros.core.data.reader import episode_summaries, iter_episode_frames, parse_episode_list
    from vla_rl_ros.core.data.store import read_info

    rows, tasks, eps_meta = [], [], {"episodes": 0, "skipped_no_noise": 0, "successes": 0}
    ep_returns, ep_group, ep_rewards = {}, {}, {}
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
        seeds = {row["episode_index"]: (row.get("meta") or {}).get("seed") for row in episode_summaries(root)}
        for e_idx, d in tqdm(iter_episode_frames(root, keys=ekeys, episodes=sel), total=len(sel),
                             desc=f"loading {Path(root).name}", disable=not progress, leave=False):
            eps_meta["episodes"] += 1
            success = bool(np.any(np.asarray(d[S.SUCCESS])))
            eps_meta["successes"] += int(success)
            dec = decisions_from_episode(d, horizon, cameras, gamma)
            if not dec:
                eps_meta["skipped_no_noise"] += 1
                continue
            for r in dec:
                r["episode"] = ep_id
                tasks.append(str(d["task"]))
            rew = np.asarray(d[S.REWARD], dtype=np.float64)
            ep_returns[ep_id] = (returns(rew, success, gamma), success)
            ep_rewards[ep_id] = rew
            if seeds.get(e_idx) is not None:  # same scene, same policy version: one group
                ep_group[ep_id] = (str(root), int(seeds[e_idx]), dec[0]["version"])
            rows.extend(dec)
            ep_id += 1
    if not rows:
        raise ValueError("no explored decisions in the data (were the episodes collected with exploration?)")
    enc = InstructionEncoder()
    lang_of = {t: enc.encode(t) for t in sorted(set(tasks))}
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
    )
    eps_meta["decisions"] = len(rows)
    eps_meta["ep_returns"], eps_meta["ep_group"], eps_meta["ep_rewards"] = ep_returns, ep_group, ep_rewards
    eps_meta["instructions"] = {k: v.tolist() for k, v in lang_of.items()}
    return dec, eps_meta


class ValueNet(torch.nn.Module):
    def __init__(self, d_in: int, hidden: int = 256):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def fit_values(feats: torch.Tensor, ret: torch.Tensor, episodes: np.ndarray, cfg: RLConfig):
    """Cross-fitted values: each half (by episode) predicted by a net trained on the other half
    (``cfg.value_*``, ``cfg.seed``). Returns (values, held-out MSE in normalised return units)."""
    steps, seed = cfg.value_steps, cfg.seed
    g = torch.Generator().manual_seed(seed)
    mu, sd = ret.mean(), ret.std().clamp(min=1e-6)
    y = (ret - mu) / sd
    ueps = np.unique(episodes)
    perm = np.random.default_rng(seed).permutation(ueps)
    half = set(perm[: len(perm) // 2].tolist())
    fold = torch.tensor([e in half for e in episodes])
    if fold.all() or (~fold).all():  # a single episode: no cross-fitting possible
        fold = torch.arange(len(episodes)) % 2 == 0
    values = torch.zeros_like(ret)
    mse = []
    for f in (True, False):
        tr, te = fold != f, fold == f
        net = ValueNet(feats.shape[1], cfg.value_hidden)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.value_lr, weight_decay=cfg.value_weight_decay)
        xt, yt = feats[tr], y[tr]
        for _ in range(steps):
            i = torch.randint(0, len(xt), (min(cfg.value_batch, len(xt)),), generator=g)
            loss = torch.nn.functional.mse_loss(net(xt[i]), yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pv = net(feats[te])
            values[te] = pv * sd + mu
            mse.append(float(torch.nn.functional.mse_loss(pv, y[te])))
    return values, float(np.mean(mse))


def train_rl(args: RLConfig, progress=True) -> dict:
    from tqdm import tqdm

    args.validate()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.save(out / "config.json")  # the resolved configuration, next to the outputs
    t0 = time.time()
    model, config = load_checkpoint(args.init, joint_names=PANDA.joint_names)
    base_version = int(config.get("version", 0))
    cfg = model.cfg
    dec, meta = load_decisions(args.data, cfg.horizon, cfg.cameras, args.gamma, progress, args.episodes)
    N = len(dec.ret)
    lo = torch.tensor(PANDA.lower, dtype=torch.float32)
    hi = torch.tensor(PANDA.upper, dtype=torch.float32)

    # frozen backbone: prefix tokens and pooled features, once
    model.eval()
    prefixes, feats = [], []
    with torch.no_grad():
        for i in tqdm(range(0, N, 256), desc="backbone features", disable=not progress, leave=False):
            sl = slice(i, i + 256)
            p = model.prefix(torch.from_numpy(dec.images[sl]), torch.from_numpy(dec.state[sl]),
                             torch.from_numpy(dec.lang[sl]))
            prefixes.append(p)
            feats.append(torch.cat([p[:, 0], p[:, 2:].mean(1)], -1))
    prefix = torch.cat(prefixes)
    state = torch.from_numpy(dec.state)
    s_norm = (state - model.state_mean) / model.state_std
    feat = torch.cat([torch.cat(feats), s_norm], -1)

    def mu_of(head, rows):
        d = head(prefix[rows]) * model.delta_std + model.delta_mean
        return state[rows][:, None, : cfg.action_dim] + d

    if args.critic == "privileged" and dec.priv is None:
        raise ValueError("--critic privileged needs observation.environment_state in every dataset "
                         "(simulation data collected by this stack)")
    critic = "privileged" if args.critic != "features" and dec.priv is not None else "features"
    if critic == "privileged":
        pv = torch.from_numpy(dec.priv).float()
        cfeat = torch.cat([(pv - pv.mean(0)) / pv.std(0).clamp(min=1e-6), s_norm], -1)
    else:
        cfeat = feat
    ret = torch.from_numpy(dec.ret).float()
    values, value_loss = fit_values(cfeat, ret, dec.episode, args)
    baseline = f"value_mlp ({critic})"
    critic_ok = value_loss < args.critic_max_mse
    if not critic_ok:  # held out, the MLP predicts worse than the mean return: don't use it
        values, baseline = torch.full_like(ret, float(ret.mean())), "mean_return"
    gb, has_group = group_baseline(dec.t, dec.episode, meta["ep_returns"], meta["ep_group"], args.gamma)
    group_fraction = float(has_group.mean())
    if args.baseline == "group" and group_fraction == 0:
        raise ValueError("--baseline group needs episodes that share a seed (collect with a group size > 1)")
    if args.advantage == "gae" and critic_ok:
        adv = torch.from_numpy(episode_gae(dec, values.double().numpy(), meta, args.gamma, args.gae_lambda)).float()
        baseline = f"GAE(λ={args.gae_lambda:g}) on the {critic} critic"
    else:
        if args.baseline != "value" and group_fraction > 0:
            # decisions whose scene was rolled out more than once use the leave-one-out group mean
            values = torch.where(torch.from_numpy(has_group), torch.from_numpy(gb).float(), values)
            baseline = f"group ({100 * group_fraction:.0f}% of decisions), else {baseline}"
        adv = ret - values
    if args.normalize_advantages:
        adv = (adv - adv.mean()) / adv.std().clamp(min=1e-6)

    acts, sig, mask = (torch.from_numpy(x) for x in (dec.actions, dec.sigma, dec.mask))
    mu_b = torch.from_numpy(dec.mu_b)
    logp_b = torch.from_numpy(dec.logp_b).float()
    base_head = copy.deepcopy(model.head).eval()
    for p_ in base_head.parameters():
        p_.requires_grad_(False)
    with torch.no_grad():
        mu_base = torch.cat([mu_of(base_head, torch.arange(i, min(i + 512, N))) for i in range(0, N, 512)])
    sig_ref = sig[:, :1].expand_as(sig)  # σ of the first token stands in for the unexecuted ones
    # dimensions that were not explored (σ = 0, e.g. the gripper) get no likelihood gradient; the
    # regulariser holds them to the base head in units of anchor_sigma
    sig_ref = torch.where(sig_ref > 0, sig_ref, torch.full_like(sig_ref, args.anchor_sigma))

    head = model.head
    head.train()
    params = list(head.parameters() if args.trainable == "head" else head.out.parameters())
    for p_ in head.parameters():
        p_.requires_grad_(False)
    for p_ in params:
        p_.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    # initial ratio check: the init head should reproduce the logged likelihood when it is the
    # behaviour policy (ratio ≈ 1)
    with torch.no_grad():
        lp0 = chunk_log_prob(torch.clamp(mu_base, lo, hi), acts, sig, mask, lo, hi)
        init_log_ratio = (lp0 - logp_b).abs()
        if args.ratio == "dim":
            # per-factor behaviour log-densities from the logged μ_b and σ; their sum is checked
            # against the logged chunk log-likelihood so a logging bug cannot pass silently
            lpb_dim, _ = dim_log_prob(torch.minimum(torch.maximum(mu_b, lo), hi), acts, sig, mask, lo, hi)
            gap = (lpb_dim.sum(dim=(-1, -2)) - logp_b).abs()
            if float(gap.median()) > args.logp_check_tol:
                raise ValueError(f"logged behaviour log-likelihood disagrees with the logged μ/σ "
                                 f"(median gap {float(gap.median()):.3g} nats): cannot use --ratio dim")
    bar = tqdm(range(args.epochs), desc="train-rl", disable=not progress, dynamic_ncols=True)
    stopped_early = False
    for epoch in bar:
        order = torch.randperm(N, generator=gen)
        agg = {"loss": [], "clip_fraction": [], "ess": [], "kl_base": []}
        for i in range(0, N, args.batch_size):
            rows = order[i : i + args.batch_size]
            mu = mu_of(head, rows)
            mu_c = torch.minimum(torch.maximum(mu, lo), hi)
            if args.ratio == "dim":
                lp, keep = dim_log_prob(mu_c, acts[rows], sig[rows], mask[rows], lo, hi)
                a_dim = adv[rows][:, None, None].expand_as(lp)
                loss_pi, st = policy_loss(lp[keep], lpb_dim[rows][keep], a_dim[keep], clip=args.clip, log_ratio_max=args.log_ratio_max)
            else:
                lp = chunk_log_prob(mu_c, acts[rows], sig[rows], mask[rows], lo, hi)
                loss_pi, st = policy_loss(lp, logp_b[rows], adv[rows], clip=args.clip, log_ratio_max=args.log_ratio_max)
            kl_base = gaussian_kl(mu, mu_base[rows], sig_ref[rows]).mean()
            loss = loss_pi + args.kl_coef * kl_base
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip_norm)
            opt.step()
            agg["loss"].append(st.loss)
            agg["clip_fraction"].append(st.clip_fraction)
            agg["ess"].append(st.ess)
            agg["kl_base"].append(float(kl_base.detach()))
        with torch.no_grad():
            mu_all = torch.cat([mu_of(head, torch.arange(i, min(i + 512, N))) for i in range(0, N, 512)])
            kl_b = float(gaussian_kl(mu_all, mu_b, sig, mask).mean())
            lp = chunk_log_prob(torch.clamp(mu_all, lo, hi), acts, sig, mask, lo, hi)
            r = torch.exp(torch.clamp(lp - logp_b, max=args.log_ratio_max))
            ess_all = float(r.sum() ** 2 / (N * (r**2).sum()))
        h = {"epoch": epoch + 1, "policy_loss": float(np.mean(agg["loss"])),
             "clip_fraction": float(np.mean(agg["clip_fraction"])), "ess": ess_all,
             "ess_minibatch": float(np.mean(agg["ess"])), "kl_behaviour": kl_b,
             "kl_base": float(np.mean(agg["kl_base"])), "value_loss": value_loss}
        history.append(h)
        bar.set_postfix(ess=f"{ess_all:.2f}", clip=f"{h['clip_fraction']:.2f}", kl=f"{kl_b:.3f}")
        if kl_b > args.target_kl:
            stopped_early = True
            break
    head.eval()
    version = args.version or base_version + 1
    res_meta = {
        "trained_by": "vla-rl-ros train-rl", "args": asdict(args), "init": str(Path(args.init).resolve()),
        "init_version": base_version, "decisions": N, "episodes": meta["episodes"],
        "episode_success_rate": meta["successes"] / max(1, meta["episodes"]),
        "behaviour_versions": sorted(set(int(v) for v in dec.version)),
        "init_log_ratio_median": float(init_log_ratio.median()),
        "value_loss": value_loss, "baseline": baseline, "critic": critic, "advantage": args.advantage, "group_fraction": group_fraction, "stopped_early": stopped_early, "history": history,
        "train_seconds": time.time() - t0,
        "params_trained": sum(p.numel() for p in params),
    }
    instructions = dict(config.get("instructions") or {})
    instructions.update(meta["instructions"])
    extra = {}
    if args.export_onnx:
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
