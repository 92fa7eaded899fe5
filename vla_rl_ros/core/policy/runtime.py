"""A loaded policy ready for the control loop: validated inputs in, a finite chunk out.

``PolicyRuntime(ckpt).infer(Observation(images={...}, state=q, instruction="..."))`` returns
μ as an (H, action_dim) float64 array of joint targets. Bad input raises
:class:`ObservationError` with the reason (wrong camera set, image size/dtype, NaN state, empty
instruction); a non-finite output raises too — nothing built from bad input leaves this class.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vla_rl_ros.core.policy.backends import Backend, export_onnx, make_backend
from vla_rl_ros.core.policy.checkpoint import (
    CheckpointError,
    load_checkpoint,
    probe_outputs_finite,
    sha256_file,
)
from vla_rl_ros.core.policy.text import InstructionEncoder, InstructionError


class ObservationError(ValueError):
    pass


@dataclass
class Observation:
    images: dict  # camera name -> uint8 (H, W, 3)
    state: np.ndarray  # (state_dim,)
    instruction: str


def onnx_for(ckpt: str | os.PathLike, model, cache_dir: str | os.PathLike | None = None) -> Path:
    """The checkpoint's ``model.onnx`` if it ships one, else an export cached by weights hash."""
    ckpt = Path(ckpt)
    if (ckpt / "model.onnx").is_file():
        return ckpt / "model.onnx"
    cache = Path(cache_dir or Path.home() / ".cache" / "vla_rl_ros" / "onnx")
    cache.mkdir(parents=True, exist_ok=True)
    key = sha256_file(ckpt / "model.safetensors")[:20]
    path = cache / f"{key}.onnx"
    if not path.is_file():
        export_onnx(model, path)
    return path


class PolicyRuntime:
    def __init__(
        self,
        ckpt: str | os.PathLike,
        backend: str = "auto",
        joint_names=None,
        threads: int | None = None,
        onnx_cache_dir: str | None = None,
    ):
        self.path = str(Path(ckpt).resolve())
        self.model, self.config = load_checkpoint(ckpt, joint_names=joint_names)
        probe_outputs_finite(self.model)
        self.cfg = self.model.cfg
        self.version = int(self.config.get("version", 0))
        self.text = InstructionEncoder(self.config.get("instructions"))
        onnx = None
        if backend in ("auto", "onnx", "onnxruntime", "tensorrt"):
            try:
                onnx = onnx_for(ckpt, self.model, onnx_cache_dir)
            except Exception as e:  # export problems must not stop torch inference
                if backend != "auto":
                    raise CheckpointError(f"cannot export {ckpt} to ONNX: {e}") from e
        self.backend: Backend = make_backend(backend, self.model, onnx, threads=threads)
        self._lock = threading.Lock()

    @property
    def horizon(self) -> int:
        return self.cfg.horizon

    @property
    def cameras(self) -> tuple:
        return tuple(self.cfg.cameras)

    def describe(self) -> str:
        return f"policy v{self.version} ({self.backend.describe()}) from {self.path}"

    def embed(self, instruction: str) -> np.ndarray:
        try:
            return self.text.encode(instruction)
        except InstructionError as e:
            raise ObservationError(str(e)) from e

    def check(self, obs: Observation) -> None:
        size = self.cfg.image_size
        missing = [c for c in self.cfg.cameras if c not in obs.images]
        if missing:
            raise ObservationError(f"missing camera image(s) {missing}; the policy needs {list(self.cfg.cameras)}")
        for c in self.cfg.cameras:
            img = obs.images[c]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
                raise ObservationError(f"camera {c}: expected a uint8 array, got {getattr(img, 'dtype', type(img))}")
            if img.shape != (size, size, 3):
                raise ObservationError(f"camera {c}: image is {img.shape}, the policy expects ({size}, {size}, 3)")
        state = np.asarray(obs.state)
        if state.shape != (self.cfg.state_dim,):
            raise ObservationError(f"state has shape {state.shape}, expected ({self.cfg.state_dim},)")
        if not np.all(np.isfinite(state)):
            raise ObservationError(f"state contains NaN/Inf: {state.tolist()}")
        if not str(obs.instruction).strip():
            raise ObservationError("empty instruction")

    def infer_batch(self, images: np.ndarray, state: np.ndarray, lang: np.ndarray) -> np.ndarray:
        out = self.backend.infer(images, state, lang)
        if not np.all(np.isfinite(out)):
            raise ObservationError("policy produced non-finite actions; nothing published")
        return out.astype(np.float64)

    def infer(self, obs: Observation) -> np.ndarray:
        self.check(obs)
        lang = self.embed(obs.instruction)
        images = np.stack([obs.images[c] for c in self.cfg.cameras])[None]
        state = np.asarray(obs.state, dtype=np.float32)[None]
        with self._lock:
            return self.infer_batch(images, state, lang[None])[0]


def torch_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)
