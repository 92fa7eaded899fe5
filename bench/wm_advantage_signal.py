"""Does a critic know which executed chunk was better? The world model's advantage, and the TD
advantage from the *real* next state, against the realised advantage of held-out decisions.

    .venv/bin/python bench/wm_advantage_signal.py [--data runs/wm_data] [--checkpoint models/vla_bc_v4]
                                                  [--fit-episodes 200] [--privileged]

The model is fitted on the first ``--fit-episodes`` episodes (whole scenes when the data were
collected with ``--seed-repeat``) and every figure is computed on the decisions of the others:

* realised advantage: the decision's discounted return minus the leave-one-out mean of its
  scene's other rollouts at the same time step (``core/rl/advantages.group_baseline``);
* world model advantage: Q(executed) − mean Q(16 candidates drawn like the explorer), penalty 0
  and 1 (``core/wm/scoring.model_advantages``);
* real TD advantage: R(chunk) + γ^k V(z_real(t+k)) − V(z(t)) with the model's value head, and the
  same with the imagined next latent.

Prints Spearman correlations (the number of decisions; a standard error is about 1/√n).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from scipy.stats import spearmanr

    from vla_rl_ros.core.policy.checkpoint import load_checkpoint
    from vla_rl_ros.core.policy.grounding import skill_embedder
    from vla_rl_ros.core.rl.advantages import group_baseline
    from vla_rl_ros.core.rl.samples import load_decisions
    from vla_rl_ros.core.rl.trainer import encode_decisions
    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.core.sim.task_features import episode_contact, episode_privileged_features
    from vla_rl_ros.core.wm.config import WMConfig
    from vla_rl_ros.core.wm.data import load_frames
    from vla_rl_ros.core.wm.latent import fit_latent_world_model, frame_privileged
    from vla_rl_ros.core.wm.scoring import executed_chunk, model_advantages

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="runs/wm_data")
    ap.add_argument("--checkpoint", default="models/vla_bc_v4")
    ap.add_argument("--fit-episodes", type=int, default=200)
    ap.add_argument("--privileged", action="store_true", help="the simulator's task features in the latent")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pol, conf = load_checkpoint(args.checkpoint, joint_names=PANDA.joint_names)
    emb = skill_embedder(args.checkpoint, conf.get("instructions"))
    cfg = WMConfig(data=(args.data,), checkpoint=args.checkpoint, privileged="auto" if args.privileged else "off")
    fr = load_frames(cfg.data, pol, emb, cfg.gamma, episode_contact, privileged=episode_privileged_features)
    n_fit = args.fit_episodes
    wm, _ = fit_latent_world_model(cfg, fr.select_episodes(np.arange(n_fit)), pol)
    dec, info, _ = load_decisions([args.data], pol.cfg.horizon, pol.cfg.cameras, cfg.gamma, True, f"{n_fit}:",
                                  episode_privileged_features, embed=emb)
    gb, has = group_baseline(dec.t, dec.episode, info.returns, info.group, cfg.gamma)
    realised = dec.ret - gb
    z = encode_decisions(wm, dec)
    k = wm.chunk_len
    ex = executed_chunk(dec.actions, dec.mask, k)
    mu, sg = executed_chunk(dec.mu_b, dec.mask, k), executed_chunk(dec.sigma, dec.mask, k)
    lo, hi = np.asarray(PANDA.lower, np.float64), np.asarray(PANDA.upper, np.float64)
    rho = dec.rho if dec.rho is not None else np.zeros(len(dec.t))
    print(f"model fitted on episodes 0–{n_fit - 1}; {len(dec.t)} held-out decisions, "
          f"{int(has.sum())} with a scene group; privileged latent: {wm.uses_privileged}")
    for pen in (0.0, 1.0):
        a_wm, _ = model_advantages(wm, z, ex, mu, sg, rho, lo, hi, 16, 1, pen, 0, False)
        a_wm = a_wm.numpy()
        m = has & (a_wm != 0)
        print(f"  world model advantage (penalty {pen:g}) vs realised: Spearman "
              f"{spearmanr(a_wm[m], realised[m]).statistic:+.3f} (n {int(m.sum())})")
    zf = wm.latent(torch.from_numpy(fr.feats).float(), torch.from_numpy(fr.state).float(),
                   frame_privileged(fr) if wm.uses_privileged else None)
    V = wm.predict(zf).value.numpy()
    where = {(int(e), int(t)): i for i, (e, t) in enumerate(zip(fr.episode, fr.t))}
    g = cfg.gamma
    real_td = np.full(len(dec.t), np.nan)
    for i, (e, t) in enumerate(zip(dec.episode, dec.t)):
        a, b = where.get((n_fit + int(e), int(t))), where.get((n_fit + int(e), int(t) + k))
        if a is not None and b is not None:
            real_td[i] = sum(fr.reward[a + j] * g ** j for j in range(k)) + g ** k * V[b] - V[a]
    exe = torch.from_numpy(ex).float()
    img_td = (wm.reward(z, exe) + g ** k * wm.predict(wm.step(z, exe)).value - wm.predict(z).value).numpy()
    m = np.isfinite(real_td) & has
    print(f"  TD advantage from the real next state vs realised: {spearmanr(real_td[m], realised[m]).statistic:+.3f}; "
          f"imagined TD vs realised: {spearmanr(img_td[m], realised[m]).statistic:+.3f}; "
          f"imagined vs real TD: {spearmanr(img_td[m], real_td[m]).statistic:+.3f} (n {int(m.sum())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
