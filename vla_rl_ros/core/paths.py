"""Paths and shipped defaults (no rclpy: ROS-free verbs read them too)."""

from __future__ import annotations

from pathlib import Path

#: the repository (or installed package) root
REPO_ROOT = Path(__file__).resolve().parents[2]

#: the shipped policy checkpoint: what ``evaluate``, ``train-rl``, ``improve`` and ``policy_node``
#: use when no ``checkpoint`` is given
DEFAULT_CHECKPOINT = str(REPO_ROOT / "models" / "vla_bc_v4")


def checkpoint_or_default(path: str) -> str:
    """``path``, or the shipped checkpoint when it is empty."""
    return path or DEFAULT_CHECKPOINT
