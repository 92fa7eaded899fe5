"""The default world model: a latent, chunk-level dynamics ensemble on the frozen policy backbone.

Latent ``z = [PCA_P(features) / scale, normalised joint state (, privileged task features)]``: the
policy's pooled prefix features (``VLAPolicy.features``, frozen: post-training changes the action
head only, so every checkpoint descended from the same parent shares them) projected onto their
first P principal components and whitened, plus the joint state. With ``WMConfig.privileged``
auto (not the default) and a simulator that logs its state, also the task features the
privileged critic sees (gripper → instructed cube, cube → goal, lift, gripper, time, family): the
model is an offline training tool that is never deployed, so in simulation it may see what the
policy cannot, as the asymmetric critic does.

* **Dynamics**: an ensemble of ``members`` MLPs, each mapping (z, executed chunk as normalised
  joint deltas from z's state) to the change of z over the chunk's k ticks and the discounted
  reward collected meanwhile. Members are trained on independent minibatches from different
  initialisations; their mean is the prediction, their spread the uncertainty.
* **Heads** on z: the value (discounted return from here, success absorbing), P(success),
  P(contact: holding / pushing the instructed object) and the behaviour's mean chunk (used to
  continue a branch beyond its first chunk).
* ``halt_threshold``: the 95th percentile of the uncertainty over real transitions of training
  episodes kept aside from the fit (on the fitted transitions themselves the members agree far
  more than anywhere else, so that percentile would halt almost every new state).

Saved as ``wm.safetensors`` + ``wm.json``; loading checks that the policy it is given has the
backbone the model was trained on (a digest of the backbone's weights).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vla_rl_ros.core.formats import check_format
from vla_rl_ros.core.wm.config import WMConfig
from vla_rl_ros.core.wm.data import Frames
from vla_rl_ros.core.wm.interface import Prediction, WorldModel

#: percentile of the uncertainty on real transitions not fitted beyond which a branch halts
HALT_PERCENTILE = 95.0
#: fewest transitions a model is fitted on (minibatches are drawn with replacement)
MIN_TRANSITIONS = 16
#: share of the training episodes kept aside (not fitted) to set the halt threshold
CALIBRATION_FRACTION = 0.1
FORMAT = "vla_rl_ros.latent_world_model/1"


def backbone_digest(policy) -> str:
    """sha256 of the policy backbone's weights (what the latent depends on)."""
    h = hashlib.sha256()
    for p in policy.backbone_parameters():
        h.update(p.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class EnsembleLinear(nn.Module):
    """``members`` independent linear maps applied to (E, B, d_in) at once."""

    def __init__(self, members: int, d_in: int, d_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class Dynamics(nn.Module):
    """(E, B, Z + k·D) -> (E, B, Z + 1): normalised Δz and reward, one row per member."""

    def __init__(self, members: int, d_in: int, d_out: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(EnsembleLinear(members, d_in, hidden), nn.GELU(),
                                 EnsembleLinear(members, hidden, hidden), nn.GELU(),
                                 EnsembleLinear(members, hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Heads(nn.Module):
    """z -> value, success logit, contact logit, behaviour chunk (normalised deltas)."""

    def __init__(self, z_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(z_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.out = nn.Linear(hidden, 3 + act_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(z))


class LatentWorldModel(WorldModel):
    """See the module doc. Build with :func:`fit_latent_world_model` or :meth:`load`."""

    def __init__(self, policy, cfg: WMConfig, stats: dict, dynamics: Dynamics, heads: Heads,
                 halt_threshold: float = float("inf"), has_contact: bool = False):
        #: the latent holds the simulator's privileged task features (``encode`` then needs them)
        self.policy, self.cfg, self.stats = policy, cfg, stats
        self.dynamics, self.heads = dynamics.eval(), heads.eval()
        self.chunk_len, self.gamma = int(cfg.chunk), float(cfg.gamma)
        self.halt_threshold = float(halt_threshold)
        self.has_contact = has_contact
        self.action_dim = policy.cfg.action_dim
        self.P = int(stats["pca_components"].shape[1])
        self.S = int(policy.cfg.state_dim)
        self.uses_privileged = "priv_mean" in stats

    # ----------------------------------------------------------------- latent
    def latent(self, feats: torch.Tensor, state: torch.Tensor, privileged: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled backbone features (B, F), raw state (B, S) and, for a model with privileged
        inputs, the simulator's task features (B, Q) -> z (B, P + S [+ Q])."""
        s = self.stats
        pc = (feats - s["pca_mean"]) @ s["pca_components"] / s["pca_scale"]
        parts = [pc, (state - self.policy.state_mean) / self.policy.state_std]
        if self.uses_privileged:
            if privileged is None:
                raise ValueError("this world model's latent holds the simulator's privileged task features: pass them "
                                 "(logged episodes with observation.environment_state), or train one with --privileged off")
            parts.append((privileged - s["priv_mean"]) / s["priv_std"])
        return torch.cat(parts, -1)

    def state_of(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, self.P:self.P + self.S] * self.policy.state_std + self.policy.state_mean

    def chunk_input(self, z: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """(B, k, D) absolute joint targets -> (B, k·D) normalised deltas from z's state."""
        if chunk.ndim != 3 or chunk.shape[1] != self.chunk_len or chunk.shape[2] != self.action_dim:
            raise ValueError(f"chunk must be (B, {self.chunk_len}, {self.action_dim}), got {tuple(chunk.shape)}")
        st = self.state_of(z)[:, None, : self.action_dim]
        return ((chunk - st - self.policy.delta_mean) / self.policy.delta_std).flatten(1)

    def _members(self, z: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z, self.chunk_input(z, chunk)], -1)
        with torch.no_grad():
            return self.dynamics(x[None].expand(self.cfg.members, -1, -1))

    # ----------------------------------------------------------------- WorldModel
    def encode(self, images, state, lang, privileged=None) -> torch.Tensor:
        with torch.no_grad():
            return self.latent(self.policy.features(images, state, lang), state, privileged)

    def member_steps(self, z: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """(E, B, Z): every member's next latent."""
        return z[None] + self._members(z, chunk)[..., :-1] * self.stats["dz_std"]

    def step(self, z, chunk) -> torch.Tensor:
        return self.member_steps(z, chunk).mean(0)

    def reward(self, z, chunk) -> torch.Tensor:
        r = self._members(z, chunk)[..., -1].mean(0)
        return r * self.stats["r_std"] + self.stats["r_mean"]

    def uncertainty(self, z, chunk) -> torch.Tensor:
        """Root mean (over latent dims) of the members' variance of the normalised Δz."""
        return self._members(z, chunk)[..., :-1].var(0).mean(-1).sqrt()

    def predict(self, z) -> Prediction:
        with torch.no_grad():
            h = self.heads(z)
        return Prediction(value=h[:, 0] * self.stats["v_std"] + self.stats["v_mean"],
                          success=torch.sigmoid(h[:, 1]), contact=torch.sigmoid(h[:, 2]))

    def act(self, z) -> torch.Tensor:
        """The behaviour's mean chunk (B, k, D) at z (continues a branch past its first chunk)."""
        with torch.no_grad():
            d = self.heads(z)[:, 3:].reshape(len(z), self.chunk_len, self.action_dim)
        return self.state_of(z)[:, None, : self.action_dim] + d * self.policy.delta_std + self.policy.delta_mean

    # ----------------------------------------------------------------- files
    def save(self, out: Path, meta: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"stats.{k}": v.contiguous() for k, v in self.stats.items()}
        tensors.update({f"dynamics.{k}": v.contiguous() for k, v in self.dynamics.state_dict().items()})
        tensors.update({f"heads.{k}": v.contiguous() for k, v in self.heads.state_dict().items()})
        tmp = out / "wm.safetensors.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(out / "wm.safetensors")
        info = {"format": FORMAT, "config": json.loads(self.cfg.to_json()), "halt_threshold": self.halt_threshold,
                "has_contact": self.has_contact, "backbone_digest": backbone_digest(self.policy),
                "latent_dim": int(self.stats["dz_std"].shape[0]), "uses_privileged": self.uses_privileged,
                **(meta or {})}
        (out / "wm.json").write_text(json.dumps(info, indent=1))
        return out

    @classmethod
    def load(cls, path: Path, policy) -> "LatentWorldModel":
        """The model saved in ``path``, encoding with ``policy`` (whose backbone must be the one it
        was trained on). Missing, corrupt or mismatched files are a ``ValueError`` naming the cause."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "wm.json").is_file() or not (path / "wm.safetensors").is_file():
            raise ValueError(f"{str(path)!r} is not a world model (wm.json and wm.safetensors expected; "
                             f"train one with vla-rl-ros train-wm)")
        try:
            info = json.loads((path / "wm.json").read_text())
            tensors = load_file(str(path / "wm.safetensors"))
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same error for the user
            raise ValueError(f"world model {str(path)!r} is unreadable: {e}") from e
        check_format(info.get("format"), FORMAT, "world model", path)
        if info.get("backbone_digest") != backbone_digest(policy):
            raise ValueError(f"world model {str(path)!r} was trained on another policy backbone than the "
                             f"checkpoint given (its latent would mean nothing): retrain it with train-wm")
        for k, v in tensors.items():
            if not torch.isfinite(v).all():
                raise ValueError(f"world model {str(path)!r}: tensor {k} contains NaN/Inf")
        cfg = WMConfig(**info["config"])
        stats = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}
        z_dim = int(info["latent_dim"])
        dyn, heads = _networks(cfg, z_dim, policy.cfg.action_dim)
        dyn.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("dynamics.")})
        heads.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("heads.")})
        return cls(policy, cfg, stats, dyn, heads, info["halt_threshold"], bool(info.get("has_contact")))


def frame_privileged(frames: Frames) -> torch.Tensor | None:
    return None if frames.priv is None else torch.from_numpy(frames.priv).float()


def _networks(cfg: WMConfig, z_dim: int, action_dim: int) -> tuple[Dynamics, Heads]:
    a_in = cfg.chunk * action_dim
    return Dynamics(cfg.members, z_dim + a_in, z_dim + 1, cfg.hidden), Heads(z_dim, a_in, cfg.hidden)


def pca(feats: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (F,), components (F, n), scale (n,)): the first ``n`` principal axes and their std."""
    mean = feats.mean(0)
    x = feats - mean
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    n = min(n, vt.shape[0])
    scale = s[:n] / math.sqrt(max(len(feats) - 1, 1))
    return mean, vt[:n].T, np.maximum(scale, 1e-6)


def fit_latent_world_model(cfg: WMConfig, frames: Frames, policy, progress=True,
                           scalars=None) -> tuple[LatentWorldModel, list]:
    """Train the default model on ``frames`` (module doc): ``CALIBRATION_FRACTION`` of the
    episodes (when there are at least ``1 / CALIBRATION_FRACTION``) are kept aside to set the halt
    threshold, the rest is fitted. Returns (model, loss history). ``scalars``: a
    :class:`~vla_rl_ros.core.scalars.ScalarLog` that also gets every loss entry (``wm/...``)."""
    ids = np.unique(frames.episode)
    n_cal = int(len(ids) * CALIBRATION_FRACTION)
    if n_cal >= 1:
        cal_ids = np.random.default_rng(cfg.seed + 1).permutation(ids)[:n_cal]
        fit_ids = np.setdiff1d(ids, cal_ids)
        wm, history = _fit(cfg, frames.select_episodes(fit_ids), policy, progress, scalars)
        calib = frames.select_episodes(cal_ids)
    else:
        wm, history = _fit(cfg, frames, policy, progress, scalars)
        calib = frames
    start, _ = calib.transitions(cfg.chunk)
    if len(start):
        with torch.no_grad():
            z = wm.latent(torch.from_numpy(calib.feats).float(), torch.from_numpy(calib.state).float(),
                          frame_privileged(calib))
            chunk = torch.from_numpy(calib.chunks(start, cfg.chunk)).float()
            u = torch.cat([wm.uncertainty(z[start[i:i + 4096]], chunk[i:i + 4096]) for i in range(0, len(start), 4096)])
        wm.halt_threshold = float(np.percentile(u.numpy(), HALT_PERCENTILE))
    history[-1]["calibration_episodes"] = int(n_cal)
    return wm, history


def _fit(cfg: WMConfig, frames: Frames, policy, progress=True, scalars=None) -> tuple[LatentWorldModel, list]:
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    k, E = cfg.chunk, cfg.members
    mean, comp, scale = pca(frames.feats.astype(np.float64), cfg.latent_pca)
    stats = {"pca_mean": torch.tensor(mean, dtype=torch.float32), "pca_components": torch.tensor(comp, dtype=torch.float32),
             "pca_scale": torch.tensor(scale, dtype=torch.float32)}
    start, nxt = frames.transitions(k)
    if len(start) < MIN_TRANSITIONS:
        raise ValueError(f"{len(start)} transitions of {k} ticks: too few to train a world model "
                         f"(at least {MIN_TRANSITIONS}); log more or longer episodes")
    priv = None
    if cfg.privileged == "auto" and frames.priv is not None:
        priv = torch.from_numpy(frames.priv).float()
        stats.update(priv_mean=priv.mean(0), priv_std=priv.std(0).clamp(min=1e-4))
    z_dim = comp.shape[1] + policy.cfg.state_dim + (0 if priv is None else priv.shape[1])
    dyn, heads = _networks(cfg, z_dim, policy.cfg.action_dim)
    wm = LatentWorldModel(policy, cfg, stats, dyn, heads)
    with torch.no_grad():
        z = wm.latent(torch.from_numpy(frames.feats).float(), torch.from_numpy(frames.state).float(), priv)
        chunk = torch.from_numpy(frames.chunks(start, k)).float()
        a_in = wm.chunk_input(z[start], chunk)
        mean_chunk = torch.from_numpy(np.stack([frames.action_mean[start + j] for j in range(k)], 1)).float()
        act_target = wm.chunk_input(z[start], mean_chunk)
    dz = z[nxt] - z[start]
    disc = torch.tensor([cfg.gamma ** j for j in range(k)], dtype=torch.float32)
    r = (torch.from_numpy(np.stack([frames.reward[start + j] for j in range(k)], 1)).float() * disc).sum(1)
    ret = torch.from_numpy(frames.ret).float()
    stats.update(dz_std=dz.std(0).clamp(min=1e-4), r_mean=r.mean(), r_std=r.std().clamp(min=1e-4),
                 v_mean=ret.mean(), v_std=ret.std().clamp(min=1e-4))
    y_dyn = torch.cat([dz / stats["dz_std"], ((r - stats["r_mean"]) / stats["r_std"])[:, None]], -1)
    x_dyn = torch.cat([z[start], a_in], -1)
    y_v = (ret - stats["v_mean"]) / stats["v_std"]
    y_s = torch.from_numpy(frames.success.astype(np.float32))
    has_contact = frames.contact is not None
    y_c = torch.from_numpy(frames.contact.astype(np.float32)) if has_contact else torch.zeros(len(frames))
    params = list(dyn.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    g = torch.Generator().manual_seed(cfg.seed)
    bce = nn.functional.binary_cross_entropy_with_logits
    dyn.train()
    heads.train()
    history, t0 = [], time.time()
    bar = tqdm(range(cfg.steps), desc="train-wm", disable=not progress, dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(0, len(start), (E, cfg.batch_size), generator=g)  # each member its own sample
        l_dyn = ((dyn(x_dyn[idx]) - y_dyn[idx]) ** 2).mean()
        j = idx[0]  # the heads see frames that start a transition (their behaviour chunk exists)
        fi = torch.from_numpy(start)[j]
        h = heads(z[fi])
        l_heads = ((h[:, 0] - y_v[fi]) ** 2).mean() + bce(h[:, 1], y_s[fi]) + ((h[:, 3:] - act_target[j]) ** 2).mean()
        if has_contact:
            l_heads = l_heads + bce(h[:, 2], y_c[fi])
        loss = l_dyn + l_heads
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "dynamics": float(l_dyn.detach()), "heads": float(l_heads.detach())})
            if scalars is not None:
                scalars.add_dict("wm", history[-1], step, skip=("step",))
            bar.set_postfix(dyn=f"{history[-1]['dynamics']:.3f}", heads=f"{history[-1]['heads']:.3f}")
    dyn.eval()
    heads.eval()
    wm = LatentWorldModel(policy, cfg, stats, dyn, heads, has_contact=has_contact)
    history.append({"seconds": time.time() - t0})
    return wm, history
