"""The critic: a value MLP fitted to Monte-Carlo returns by cross-fitting.

Inputs (``RLConfig.critic``): the privileged simulator features when every decision has them
(``auto`` / ``privileged``; computed by the simulator side, ``core/sim/task_features.py``, and
passed to ``train_rl``) — the value function is never deployed, so in simulation it may see what
the policy cannot (asymmetric actor-critic) — else the frozen backbone's pooled features plus the
normalised state (``features``).

Cross-fitting: two halves by episode, each half's values predicted by the net trained on the
other half, so an advantage G − V is not fitted to its own noise. When the held-out MSE (in
units of the return variance) is not below ``critic_max_mse`` (the MLP generalises worse than a
constant), the critic is the mean return instead, and says so (``Critic.description``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vla_rl_ros.core.rl.config import RLConfig


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


@dataclass
class Critic:
    values: torch.Tensor  # (N,) V at each decision (the mean return when not ok)
    value_loss: float  # held-out MSE of the value MLP, in return variances
    kind: str  # privileged | features: the value net's inputs
    ok: bool  # the MLP beat the mean return held out (else values = the mean return)

    @property
    def description(self) -> str:
        return f"value_mlp ({self.kind})" if self.ok else "mean_return"


def fit_critic(cfg: RLConfig, ret: np.ndarray, episodes: np.ndarray, features: torch.Tensor,
               s_norm: torch.Tensor, priv: np.ndarray | None) -> Critic:
    """The critic ``cfg.critic`` asks for (module doc). ``features``: frozen backbone features +
    normalised state; ``s_norm``: the normalised state; ``priv``: privileged features or None."""
    if cfg.critic == "privileged" and priv is None:
        raise ValueError("--critic privileged needs observation.environment_state in every dataset "
                         "(simulation data collected by this stack) and the simulator's privileged features")
    kind = "privileged" if cfg.critic != "features" and priv is not None else "features"
    if kind == "privileged":
        pv = torch.from_numpy(priv).float()
        x = torch.cat([(pv - pv.mean(0)) / pv.std(0).clamp(min=1e-6), s_norm], -1)
    else:
        x = features
    r = torch.from_numpy(ret).float()
    values, value_loss = fit_values(x, r, episodes, cfg)
    ok = value_loss < cfg.critic_max_mse
    if not ok:  # held out, the MLP predicts worse than the mean return: don't use it
        values = torch.full_like(r, float(r.mean()))
    return Critic(values, value_loss, kind, ok)
