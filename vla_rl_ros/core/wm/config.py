"""``WMConfig``: every setting of the default world model and of ``train-wm`` in one place.

Each field carries a one-line help from which the command line is generated
(:func:`vla_rl_ros.core.config.add_fields`); :meth:`WMConfig.validate` checks the values before any
file is read, and ``train-wm`` writes the resolved configuration into the model's folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from vla_rl_ros.core.config import JsonConfig


def _f(default, help: str, **kw):
    """A dataclass field with its one-line help."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable default")
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class WMConfig(JsonConfig):
    """The default latent, chunk-level world model (``core/wm/latent.py``) and its training."""

    # --- data and outputs
    data: tuple[str, ...] = _f((), "LeRobot datasets logged by this stack (explored or not; at least one)")
    checkpoint: str = _f("", "the policy whose frozen backbone encodes observations (default: the shipped one)")
    episode_ids: str = _f("", "use these episodes of each dataset only: '0:150', '0,3,7', '500:' (default: all; the "
                              "same selection as train-rl's, so both can be given one real-episode budget)")
    out: str = _f("runs/wm", "output folder (model, metrics.json, plots, config.json)")
    held_out: float = _f(0.15, "fraction of episodes held out for the prediction-quality figures")
    # --- model
    chunk: int = _f(4, "executed tokens per model step (one decision when exploring with --replan-every k)")
    latent_pca: int = _f(32, "principal components of the frozen backbone features kept in the latent")
    privileged: str = _f("off", "auto: put the simulator's privileged task features (gripper → instructed cube, cube "
                                 "→ goal, lift, ...) in the latent when every frame has them (offline, in "
                                 "simulation: the model is never deployed); off: backbone features and state only",
                         choices=("auto", "off"))
    members: int = _f(5, "networks in the dynamics ensemble (>= 2: their disagreement is the uncertainty)")
    hidden: int = _f(256, "hidden width of every network")
    # --- training
    steps: int = _f(3000, "optimiser steps (dynamics ensemble and heads)")
    batch_size: int = _f(256, "transitions per minibatch")
    lr: float = _f(1e-3, "AdamW learning rate")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    gamma: float = _f(0.95, "discount per control tick of the value head's returns (success absorbing)")
    seed: int = _f(0, "seed of the split, the ensemble's initialisation and minibatches")
    threads: int = _f(2, "torch CPU threads")
    tensorboard: bool = _f(True, "also write the training losses as TensorBoard event files to <out>/tb "
                                 "(core/scalars.py)")

    def __post_init__(self):
        if isinstance(self.data, (str, Path)):
            object.__setattr__(self, "data", (str(self.data),))
        else:
            object.__setattr__(self, "data", tuple(str(d) for d in self.data))

    def validate(self) -> "WMConfig":
        """Raise ``ValueError`` naming the first bad field; returns self. Reads no file."""
        if not self.data:
            raise ValueError("data: at least one LeRobot dataset is required")
        if not self.out:
            raise ValueError("out: an output folder is required")
        for name in ("chunk", "latent_pca", "hidden", "steps", "batch_size", "lr", "threads"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.privileged not in ("auto", "off"):
            raise ValueError(f"privileged must be auto or off, got {self.privileged!r}")
        if self.members < 2:
            raise ValueError(f"members must be >= 2 (the ensemble's disagreement is the uncertainty), got {self.members}")
        if not 0.0 <= self.held_out < 1.0:
            raise ValueError(f"held_out must be in [0, 1), got {self.held_out}")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        return self
