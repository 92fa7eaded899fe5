"""``RLConfig``: every hyper-parameter of ``train-rl`` (:func:`.trainer.train_rl`) in one place.

Each field carries a one-line help (``field(metadata={"help": ...})``) from which the command line
and node parameters are generated; :meth:`RLConfig.validate` checks the values before any file
is read, and ``train_rl`` writes the resolved configuration as ``config.json`` next to its outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from vla_rl_ros.core.config import JsonConfig

#: allowed values of the choice fields
TRAINABLE = ("head", "out")
RATIO = ("chunk", "dim")
BASELINE = ("auto", "group", "value")
ADVANTAGE = ("mc", "gae", "world_model")
CRITIC = ("auto", "privileged", "features")
OBJECTIVE = ("ratio", "awr", "filtered", "best_of_k")


def _f(default, help: str, **kw):
    """A dataclass field with its one-line help."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable default")
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class RLConfig(JsonConfig):
    """Offline likelihood-ratio RL of the action head on logged exploration episodes."""

    # --- data and checkpoints
    data: tuple[str, ...] = _f((), "LeRobot datasets logged with exploration (at least one)")
    episode_ids: str = _f("", "train on these episodes of each dataset only: '0:250', '0,3,7', '500:' (default: all)")
    init: str = _f("", "checkpoint to start from")
    out: str = _f("runs/rl", "output directory (checkpoint, history.json, rl.png, config.json)")
    version: int = _f(0, "version of the result (0: init's version + 1)")
    export_onnx: bool = _f(True, "also export model.onnx next to the checkpoint (parity-checked)")
    tensorboard: bool = _f(True, "also write each epoch's history as TensorBoard event files to <out>/tb "
                                 "(core/scalars.py; improve: its per-round figures too)")
    # --- policy update
    objective: str = _f("ratio", "ratio: the likelihood-ratio policy gradient (PPO-clipped); awr: advantage-weighted "
                                 "regression (max-likelihood of the executed actions, weights exp(A/β)); filtered: "
                                 "imitation of the successful rollouts of scenes whose rollouts disagree; best_of_k: "
                                 "imitation of the best of K candidate chunks scored in --world-model at each "
                                 "logged state, where it beats μ by more than --wm-margin", choices=OBJECTIVE)
    awr_beta: float = _f(1.0, "objective awr: temperature β of the weights exp(A/β) (advantages in std units)")
    awr_max_weight: float = _f(20.0, "objective awr: upper clamp of each weight exp(A/β)")
    drop_agreeing_groups: bool = _f(False, "leave out decisions of scenes whose rollouts all succeeded or all "
                                           "failed (they carry no signal about what made the difference)")
    epochs: int = _f(10, "passes over the decisions")
    batch_size: int = _f(128, "decisions per minibatch")
    lr: float = _f(5e-5, "AdamW learning rate of the trained parameters")
    weight_decay: float = _f(0.0, "AdamW weight decay of the trained parameters")
    grad_clip_norm: float = _f(1.0, "clip the policy gradient to this global L2 norm")
    trainable: str = _f("head", "what the update changes: head (the whole action head) or out (its linear read-out)",
                        choices=TRAINABLE)
    ratio: str = _f("chunk", "likelihood ratio per decision (chunk: product over executed tokens and joints) or "
                             "per executed (token, joint) factor, each clipped on its own (dim)", choices=RATIO)
    clip: float = _f(0.2, "PPO clip ε of the likelihood ratio (> 0)")
    log_ratio_max: float = _f(20.0, "upper clamp of the log-ratio before exp (overflow guard)")
    kl_coef: float = _f(0.05, "weight of KL(π_θ ‖ π_init) over the whole chunk toward the initial head")
    anchor_sigma: float = _f(0.002, "KL-to-init scale of dimensions logged with σ = 0 (not explored)")
    target_kl: float = _f(0.5, "stop early when the KL to the behaviour policy exceeds this (nats per decision)")
    logp_check_tol: float = _f(1e-2, "--ratio dim: largest accepted gap (nats) between the logged log-likelihood "
                                     "and the one recomputed from the logged μ/σ")
    # --- advantage
    gamma: float = _f(0.95, "discount per control tick")
    advantage: str = _f("mc", "mc: Monte-Carlo return minus the baseline; gae: TD(λ) on the critic; world_model: "
                              "Q of the executed chunk minus the mean Q of candidates drawn like the explorer, both "
                              "scored in --world-model", choices=ADVANTAGE)
    baseline: str = _f("auto", "advantage mc's baseline: group (leave-one-out mean of rollouts from the same scene), "
                               "value (the critic) or auto (group where scenes repeat, else the critic)",
                       choices=BASELINE)
    gae_lambda: float = _f(0.9, "λ of TD(λ) advantages (advantage gae), in [0, 1]")
    normalize_advantages: bool = _f(True, "standardise the advantages (zero mean, unit std) before the update")
    # --- world model (advantage world_model)
    world_model: str = _f("", "folder of a world model trained by train-wm on this checkpoint's backbone")
    wm_candidates: int = _f(16, "advantage world_model: candidate chunks scored per real decision")
    wm_branch: int = _f(1, "advantage world_model: chunks per imagined branch (1-3; past the first, the model's "
                           "behaviour chunk)")
    wm_penalty: float = _f(1.0, "advantage world_model: λ of the disagreement penalty (return units per unit of "
                                "disagreement)")
    wm_scale: float = _f(1.0, "objective best_of_k: the candidates' σ in units of the logged exploration σ")
    wm_margin: float = _f(0.0, "objective best_of_k: imitate the best candidate only where its Q beats μ's by more "
                               "than this (return units)")
    # --- critic (value net)
    critic: str = _f("auto", "value net inputs: privileged simulator state when logged (auto), or the frozen features",
                     choices=CRITIC)
    value_steps: int = _f(400, "optimiser steps of each cross-fitted value net")
    value_lr: float = _f(1e-3, "AdamW learning rate of the value net")
    value_weight_decay: float = _f(1e-4, "AdamW weight decay of the value net")
    value_hidden: int = _f(256, "hidden width of the value MLP")
    value_batch: int = _f(256, "minibatch size of the value net")
    critic_max_mse: float = _f(1.0, "use the critic only if its held-out MSE (in return variances) is below this, "
                                    "else the mean return")
    # --- run
    seed: int = _f(0, "seed of the minibatch order, value nets and torch")
    threads: int = _f(2, "torch CPU threads")

    def __post_init__(self):
        if isinstance(self.data, (str, Path)):
            object.__setattr__(self, "data", (str(self.data),))
        else:
            object.__setattr__(self, "data", tuple(str(d) for d in self.data))

    def validate(self) -> "RLConfig":
        """Raise ``ValueError`` naming the first bad field; returns self. Reads no file."""
        for f in fields(self):
            ch = f.metadata.get("choices")
            if ch is not None and getattr(self, f.name) not in ch:
                raise ValueError(f"{f.name} must be one of {', '.join(ch)}, got {getattr(self, f.name)!r}")
        if not self.data:
            raise ValueError("data: at least one LeRobot dataset is required")
        if not self.init:
            raise ValueError("init: a checkpoint to start from is required")
        if not self.out:
            raise ValueError("out: an output directory is required")
        positive = ("awr_beta", "awr_max_weight", "epochs", "batch_size", "lr", "grad_clip_norm", "clip", "log_ratio_max", "anchor_sigma",
                    "target_kl", "logp_check_tol", "value_steps", "value_lr", "value_hidden", "value_batch",
                    "critic_max_mse", "threads")
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("weight_decay", "kl_coef", "value_weight_decay", "version"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.clip >= 1.0:
            raise ValueError(f"clip must be in (0, 1), got {self.clip}")
        if (self.advantage == "world_model" or self.objective == "best_of_k") and not self.world_model:
            raise ValueError(f"{'objective best_of_k' if self.objective == 'best_of_k' else 'advantage world_model'} "
                             f"needs --world-model (a folder written by train-wm)")
        if not (math.isfinite(self.wm_scale) and self.wm_scale > 0 and math.isfinite(self.wm_margin)
                and self.wm_margin >= 0):
            raise ValueError(f"wm_scale must be > 0 and wm_margin >= 0, got {self.wm_scale}, {self.wm_margin}")
        if self.wm_candidates < 2 or not 1 <= self.wm_branch <= 3:
            raise ValueError(f"wm_candidates must be >= 2 and wm_branch in 1..3, got {self.wm_candidates}, "
                             f"{self.wm_branch}")
        if not (math.isfinite(self.wm_penalty) and self.wm_penalty >= 0):
            raise ValueError(f"wm_penalty must be >= 0, got {self.wm_penalty}")
        if self.advantage == "gae" and self.baseline == "group":
            raise ValueError("baseline group applies to advantage mc only (gae uses the critic)")
        return self
