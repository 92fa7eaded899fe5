"""``BCConfig``: every option of behaviour cloning (``vla-rl-ros train-bc``, ``core/policy/bc.py``).
Light (no torch) so the command line is built without importing the trainer."""

from __future__ import annotations

from dataclasses import dataclass

from vla_rl_ros.core.config import opt, require


@dataclass(frozen=True)
class BCConfig:
    """Behaviour cloning (``vla-rl-ros train-bc``): every option and hyper-parameter."""

    data: tuple[str, ...] = opt((), "LeRobot datasets to imitate", required=True)
    out: str = opt("runs/bc", "output folder (checkpoint, loss.png)", required=True)
    steps: int = opt(3000, "optimiser steps")
    batch_size: int = opt(64, "frames per minibatch")
    lr: float = opt(3e-4, "AdamW peak learning rate (cosine schedule after warm-up)")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    warmup: int = opt(200, "linear warm-up steps")
    val_fraction: float = opt(0.1, "fraction of episodes held out for validation")
    val_every: int = opt(250, "validate every n steps")
    seed: int = opt(0, "seed of the split, initialisation and minibatches")
    threads: int = opt(2, "torch CPU threads")
    horizon: int = opt(8, "action chunk length (tokens)")
    d_model: int = opt(128, "transformer width")
    keypoints: int = opt(16, "spatial-softmax keypoint tokens (0: none)")
    augment_shift: int = opt(4, "random image shift augmentation (px)")
    resume: str = opt("", "checkpoint directory to continue from")
    init: str = opt("", "start from this checkpoint's weights (new optimiser and schedule)")
    aux_weight: float = opt(0.5, "weight of the auxiliary grounding loss on datasets with "
                                 "observation.environment_state (0: off)")
    export_onnx: bool = opt(True, "also export model.onnx (parity-checked)")
    tensorboard: bool = opt(True, "also write the losses as TensorBoard event files to <out>/tb (core/scalars.py)")
    version: int = opt(1, "version of the result")
    all_episodes: bool = opt(False, "also imitate failed episodes (default: successes only)")
    label: str = opt("auto", "imitate the executed action, rl.action_mean, or auto: the mean where no exploration "
                             "noise was logged (clean expert intention), else the action",
                     choices=("auto", "action", "mean"))

    def validate(self) -> "BCConfig":
        require(len(self.data) >= 1, "--data: at least one dataset")
        require(self.steps >= 1 and self.batch_size >= 1, "--steps and --batch-size must be >= 1")
        require(self.lr > 0, "--lr must be > 0")
        require(0 < self.val_fraction < 1, "--val-fraction must be in (0, 1)")
        require(self.val_every >= 1 and self.threads >= 1, "--val-every and --threads must be >= 1")
        require(self.aux_weight >= 0, "--aux-weight must be >= 0")
        require(not (self.init and self.resume),
                "--init and --resume are exclusive (resume continues a run; init starts a new one from weights)")
        return self


BCArgs = BCConfig  # the former name
