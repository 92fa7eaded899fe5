"""Prediction quality of a world model on held-out episodes (``train-wm``'s figures).

* **Latent error after h chunks** (h = 1, 2, 4): the model rolled open loop from a real frame's
  latent with the logged executed chunks, against the real frame's latent h·k ticks later; mean
  squared error per latent dimension, beside the *copy* baseline (the start latent itself).
* **AUC** of the success head (label: the episode's outcome) and of the contact head.
* **Disagreement vs error**: Spearman rank correlation between the ensemble's uncertainty and
  the one-chunk error over the held-out transitions (does the model know when it is wrong?).
* **Value**: held-out MSE of the value head in units of the return variance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vla_rl_ros.core.wm.data import Frames
from vla_rl_ros.core.wm.latent import frame_privileged

#: open-loop horizons (in chunks) of the latent-error figure
HORIZONS = (1, 2, 4)
#: transitions per model call
EVAL_BATCH = 4096


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney), NaN when only one class is present."""
    from scipy.stats import rankdata

    label = np.asarray(label, bool)
    n1, n0 = int(label.sum()), int((~label).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def rollout_starts(frames: Frames, k: int, h: int) -> np.ndarray:
    """Frames from which h chunks of k logged actions stay inside their episode."""
    n = h * k
    i = np.arange(max(len(frames) - n, 0))
    return i[(frames.episode[i] == frames.episode[i + n]) & (frames.t[i + n] == frames.t[i] + n)]


def evaluate_world_model(wm, frames: Frames) -> dict:
    """The module doc's figures for ``wm`` (a :class:`~.latent.LatentWorldModel`) on ``frames``."""
    from scipy.stats import spearmanr

    k = wm.chunk_len
    with torch.no_grad():
        z = wm.latent(torch.from_numpy(frames.feats).float(), torch.from_numpy(frames.state).float(),
                      frame_privileged(frames) if wm.uses_privileged else None)
    out: dict = {"frames": len(frames), "episodes": int(len(np.unique(frames.episode))), "horizons": {}}
    for h in HORIZONS:
        s = rollout_starts(frames, k, h)
        if len(s) == 0:
            continue
        model_err, copy_err = [], []
        for b in range(0, len(s), EVAL_BATCH):
            sb = s[b:b + EVAL_BATCH]
            zz = z[sb]
            for j in range(h):
                zz = wm.step(zz, torch.from_numpy(frames.chunks(sb + j * k, k)).float())
            target = z[sb + h * k]
            model_err.append(((zz - target) ** 2).mean(-1).numpy())
            copy_err.append(((z[sb] - target) ** 2).mean(-1).numpy())
        me, ce = np.concatenate(model_err), np.concatenate(copy_err)
        out["horizons"][str(h)] = {"transitions": int(len(s)), "model_mse": float(me.mean()), "copy_mse": float(ce.mean()),
                                   "ratio": float(me.mean() / max(ce.mean(), 1e-12))}
        if h == 1:
            u = np.concatenate([wm.uncertainty(z[s[b:b + EVAL_BATCH]],
                                               torch.from_numpy(frames.chunks(s[b:b + EVAL_BATCH], k)).float()).numpy()
                                for b in range(0, len(s), EVAL_BATCH)])
            out["disagreement_error_spearman"] = float(spearmanr(u, me).statistic)
            out["halted_fraction"] = float(np.mean(u > wm.halt_threshold))
            out["_one_chunk"] = (u, me)
    p = wm.predict(z)
    out["success_auc"] = auc(p.success.numpy(), frames.success)
    out["contact_auc"] = auc(p.contact.numpy(), frames.contact) if frames.contact is not None and wm.has_contact else None
    v = p.value.numpy()
    out["value_mse"] = float(np.mean((v - frames.ret) ** 2) / max(np.var(frames.ret), 1e-12))
    return out


def format_metrics(m: dict) -> str:
    lines = [f"held out: {m['episodes']} episodes, {m['frames']} frames"]
    for h, r in m["horizons"].items():
        lines.append(f"  latent MSE after {h} chunk(s): model {r['model_mse']:.3f}, copy-the-last {r['copy_mse']:.3f} "
                     f"(model / copy {r['ratio']:.2f}, {r['transitions']} transitions)")
    ca = m.get("contact_auc")
    lines.append(f"  success AUC {m['success_auc']:.3f}; contact AUC {'n/a' if ca is None else f'{ca:.3f}'}; "
                 f"value MSE {m['value_mse']:.3f} (return variances)")
    if "disagreement_error_spearman" in m:
        lines.append(f"  disagreement vs one-chunk error: Spearman {m['disagreement_error_spearman']:.3f}; "
                     f"{100 * m['halted_fraction']:.1f}% of held-out transitions beyond the halt threshold")
    return "\n".join(lines)


def plot_metrics(m: dict, history: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    hs = list(m["horizons"])
    x = np.arange(len(hs))
    axes[0].bar(x - 0.2, [m["horizons"][h]["model_mse"] for h in hs], 0.4, label="world model")
    axes[0].bar(x + 0.2, [m["horizons"][h]["copy_mse"] for h in hs], 0.4, label="copy the last latent")
    axes[0].set_xticks(x, [f"{h} chunk(s)" for h in hs])
    axes[0].set_ylabel("latent MSE per dimension")
    axes[0].set_title("held-out open-loop error", fontsize=10)
    axes[0].legend(fontsize=8)
    if "_one_chunk" in m:
        u, e = m["_one_chunk"]
        axes[1].scatter(u, e, s=3, alpha=0.3)
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("ensemble disagreement")
        axes[1].set_ylabel("one-chunk error")
        axes[1].set_title(f"does it know when it is wrong? Spearman {m['disagreement_error_spearman']:.2f}", fontsize=10)
    steps = [h["step"] for h in history if "step" in h]
    axes[2].plot(steps, [h["dynamics"] for h in history if "step" in h], label="dynamics")
    axes[2].plot(steps, [h["heads"] for h in history if "step" in h], label="heads")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("step")
    axes[2].set_title("training loss", fontsize=10)
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
