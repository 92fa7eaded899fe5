"""``GroundingConfig``: every option of the language grounding head (``vla-rl-ros
train-grounding``, ``core/policy/grounding.py``). Light (no torch) so the command line is built
without importing the trainer."""

from __future__ import annotations

from dataclasses import dataclass

from vla_rl_ros.core.config import opt, require


@dataclass(frozen=True)
class GroundingConfig:
    """``vla-rl-ros train-grounding``: the head, its training data and its calibration."""

    checkpoint: str = opt("", "policy checkpoint whose skills (its instruction table) the head grounds to",
                          required=True)
    out: str = opt("", "write a new checkpoint here: the policy's files plus the grounding head", required=True)
    per_skill: int = opt(120, "training phrasings generated per skill")
    negatives_per_kind: int = opt(3, "training phrasings per kind of impossible request")
    held_out_per_skill: int = opt(40, "held-out phrasings per skill (calibration and report)")
    max_tokens: int = opt(32, "instruction length in word pieces (longer ones are cut)")
    width: int = opt(128, "attention width of the head")
    queries: int = opt(4, "attention-pooling queries")
    heads: int = opt(4, "attention heads")
    dropout: float = opt(0.2, "dropout before the classifier")
    token_noise: float = opt(0.05, "Gaussian noise on token embeddings during training")
    token_dropout: float = opt(0.1, "fraction of word pieces hidden during training")
    epochs: int = opt(60, "passes over the training phrasings")
    members: int = opt(3, "heads trained from different seeds whose probabilities are averaged")
    batch_size: int = opt(64, "phrasings per minibatch")
    lr: float = opt(1e-3, "AdamW learning rate")
    weight_decay: float = opt(1e-2, "AdamW weight decay")
    none_threshold: float = opt(0.7, "an instruction is no task when p(none) reaches this; below it the most "
                                "likely skill is weighed among the skills alone (the scene check refuses "
                                "what the scene cannot contain)")
    max_valid_refusal: float = opt(0.01, "the threshold refuses at most this fraction of held-out valid phrasings")
    seed: int = opt(0, "seed of the phrasings, initialisation and minibatches")
    threads: int = opt(2, "torch CPU threads")

    def validate(self) -> "GroundingConfig":
        require(self.per_skill >= 1 and self.held_out_per_skill >= 1, "--per-skill and --held-out-per-skill >= 1")
        require(self.max_tokens >= 4, "--max-tokens must be >= 4")
        require(0 <= self.token_dropout < 1 and 0 <= self.dropout < 1, "dropouts must be in [0, 1)")
        require(0.5 <= self.none_threshold <= 1, "--none-threshold must be in [0.5, 1]")
        require(0 <= self.max_valid_refusal < 1, "--max-valid-refusal must be in [0, 1)")
        require(self.members >= 1, "--members must be >= 1")
        require(self.epochs >= 1 and self.batch_size >= 1 and self.lr > 0, "--epochs, --batch-size, --lr > 0")
        return self
