"""One entry point for both checkpoint formats (no rclpy): the project's own
(:class:`~vla_rl_ros.core.policy.runtime.PolicyRuntime`) and LeRobot policy directories
(:class:`~vla_rl_ros.core.policy.lerobot_backend.LeRobotRuntime`). The policy node, ``evaluate``,
``compare`` and direct collection open their policy here; the node's hot swap validates
candidates with :func:`load_any_candidate`."""

from __future__ import annotations

import os

from vla_rl_ros.core.policy.lerobot_backend import LeRobotRuntime, is_lerobot_dir, load_lerobot_candidate
from vla_rl_ros.core.policy.runtime import PolicyRuntime, load_candidate


def open_runtime(ckpt: str | os.PathLike, backend: str = "auto", joint_names=None, threads: int | None = None,
                 **kwargs):
    """The runtime for ``ckpt``: a :class:`LeRobotRuntime` for ``backend="lerobot"`` or a LeRobot
    policy directory (``save_pretrained``'s config.json with a ``type``), whatever ``backend`` says
    (lerobot's PyTorch model: the ONNX Runtime / TensorRT backends exist for the project's own
    format only); a :class:`PolicyRuntime` otherwise."""
    if backend == "lerobot" or is_lerobot_dir(ckpt):
        kwargs.pop("onnx_cache_dir", None)
        kwargs.pop("isolate_export", None)
        return LeRobotRuntime(ckpt, joint_names=joint_names, threads=threads, **kwargs)
    return PolicyRuntime(ckpt, backend=backend, joint_names=joint_names, threads=threads, **kwargs)


def load_any_candidate(path: str | os.PathLike, current):
    """The hot swap's validation (:func:`~vla_rl_ros.core.policy.runtime.load_candidate`) for either
    format; a swap between the two formats is refused with a :class:`CheckpointError`."""
    if isinstance(current, LeRobotRuntime) or is_lerobot_dir(path):
        return load_lerobot_candidate(path, current)
    return load_candidate(path, current)
