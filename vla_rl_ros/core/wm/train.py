"""``train-wm`` end to end: encode the logged frames with the checkpoint's frozen backbone, split
episodes into training and held-out, fit the default model, measure it on the held-out episodes,
save model + ``metrics.json`` + ``wm.png`` + ``config.json`` (+ the losses as TensorBoard event files in
``tb/``: ``wm/dynamics``, ``wm/heads``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from vla_rl_ros.core.rl.samples import PrivilegedFn
from vla_rl_ros.core.scalars import ScalarLog
from vla_rl_ros.core.wm.config import WMConfig
from vla_rl_ros.core.wm.data import ContactFn, load_frames
from vla_rl_ros.core.wm.evaluate import evaluate_world_model, format_metrics, plot_metrics
from vla_rl_ros.core.wm.latent import fit_latent_world_model


def split_episodes(episodes: np.ndarray, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) episode ids: a seeded random ``held_out`` fraction (at least one episode
    when the fraction is > 0 and there are two or more)."""
    ids = np.unique(episodes)
    perm = np.random.default_rng(seed).permutation(ids)
    n = int(round(held_out * len(ids)))
    if held_out > 0 and len(ids) >= 2:
        n = min(max(n, 1), len(ids) - 1)
    return np.sort(perm[n:]), np.sort(perm[:n])


def train_world_model(cfg: WMConfig, contact: ContactFn | None = None, progress=True,
                      privileged: PrivilegedFn | None = None) -> dict:
    """Train, evaluate and save (module doc). ``contact``: the simulator's contact labels
    (``core/sim/task_features.episode_contact``), None for data without them; ``privileged``: its
    task features (``episode_privileged_features``), used when ``cfg.privileged`` is auto."""
    from vla_rl_ros.core.policy.checkpoint import load_checkpoint
    from vla_rl_ros.core.policy.grounding import skill_embedder
    from vla_rl_ros.core.robot import PANDA

    cfg.validate()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    t0 = time.time()
    policy, pconf = load_checkpoint(cfg.checkpoint, joint_names=PANDA.joint_names)
    for p in policy.parameters():
        p.requires_grad_(False)
    frames = load_frames(cfg.data, policy, skill_embedder(cfg.checkpoint, pconf.get("instructions")), cfg.gamma,
                         contact, progress, privileged if cfg.privileged == "auto" else None, cfg.episode_ids)
    t_enc = time.time() - t0
    train_ids, test_ids = split_episodes(frames.episode, cfg.held_out, cfg.seed)
    with ScalarLog(out, enabled=cfg.tensorboard) as scalars:
        wm, history = fit_latent_world_model(cfg, frames.select_episodes(train_ids), policy, progress, scalars)
    metrics = evaluate_world_model(wm, frames.select_episodes(test_ids)) if len(test_ids) else {}
    one = metrics.pop("_one_chunk", None)
    meta = {"trained_by": "vla-rl-ros train-wm", "checkpoint": str(Path(cfg.checkpoint).resolve()),
            "train_episodes": int(len(train_ids)), "held_out_episodes": int(len(test_ids)),
            "frames": len(frames), "privileged": wm.uses_privileged, "encode_seconds": t_enc, "train_seconds": history[-1]["seconds"],
            "held_out": metrics}
    wm.save(out / "model", meta)
    (out / "metrics.json").write_text(json.dumps(meta, indent=1))
    if metrics:
        plot_metrics({**metrics, **({"_one_chunk": one} if one is not None else {})}, history, out / "wm.png")
    return {"model": str(out / "model"), **meta, "summary": format_metrics(metrics) if metrics else ""}
