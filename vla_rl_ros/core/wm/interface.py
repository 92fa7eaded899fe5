"""The world-model interface the post-training loop talks to (ARCHITECTURE §6).

A world model steps a *latent* state by one *executed action chunk* (the decision unit of the
explorer, ``--replan-every k``) and says what it expects there. Anything that implements these
methods — the default :class:`~vla_rl_ros.core.wm.latent.LatentWorldModel` on the frozen policy
backbone, or a larger pretrained pixel / video model on a GPU — can drive ``train-rl
--world-model``:

``encode(images, state, lang) -> z``
    Observations (uint8 images (B, C, H, W, 3), raw joint state (B, S), the network's language
    input (B, L)) to latents (B, Z). The latent is the model's own business.
``step(z, chunk) -> z'``
    Latents (B, Z) and executed chunks (B, k, D) of absolute joint targets (the first ``k =
    chunk_len`` tokens the arm ran) to the expected next latent, ``k`` control ticks later.
``predict(z) -> Prediction``
    What the model expects at a latent: the value (discounted return from here, success
    absorbing, in the units of ``train-rl``'s returns), P(the episode succeeds from here), P(the
    gripper holds / is pushing the instructed object).
``reward(z, chunk) -> r``
    The discounted reward collected while the chunk runs (B,).
``uncertainty(z, chunk) -> u``
    A non-negative disagreement score (B,): large where the model is extrapolating.
``halt_threshold``
    The uncertainty beyond which a branch stops (the 95th percentile on the training data).

All inputs and outputs are ``torch.Tensor`` on the CPU, float32; none of the methods may keep a
gradient graph of the caller's tensors. The scorer (:mod:`.scoring`) uses nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass
class Prediction:
    value: torch.Tensor  # (B,) expected discounted return from the latent
    success: torch.Tensor  # (B,) P(the episode succeeds from here)
    contact: torch.Tensor  # (B,) P(holding / pushing the instructed object now)


class WorldModel(ABC):
    """See the module doc for what each method must do."""

    #: executed tokens per step
    chunk_len: int
    #: uncertainty beyond which a branch halts
    halt_threshold: float
    #: discount per control tick the values and rewards use
    gamma: float

    @abstractmethod
    def encode(self, images: torch.Tensor, state: torch.Tensor, lang: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def step(self, z: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def predict(self, z: torch.Tensor) -> Prediction: ...

    @abstractmethod
    def reward(self, z: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def uncertainty(self, z: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor: ...
