"""A loaded policy ready for the control loop: validated inputs in, a finite chunk out.

``PolicyRuntime(ckpt).infer(Observation(images={...}, state=q, instruction="..."))`` returns
μ as an (H, action_dim) float64 array of joint targets. Bad input raises
:class:`ObservationError` with the reason (wrong camera set, image size/dtype, NaN state, empty
instruction); a non-finite output raises too — nothing built from bad input leaves this class.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
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
from vla_rl_ros.core.policy.grounding import NONE, Grounding, Understanding
from vla_rl_ros.core.policy.text import InstructionEncoder, InstructionError, normalize_instruction


class ObservationError(ValueError):
    pass


class NotUnderstood(ObservationError):
    """The instruction asks for no skill this checkpoint has (or too unclearly): hold."""


@dataclass
class Observation:
    images: dict  # camera name -> uint8 (H, W, 3)
    state: np.ndarray  # (state_dim,)
    instruction: str


def export_in_child(ckpt: str | os.PathLike, path: Path, timeout: float = 900.0) -> None:
    """Export ``ckpt`` to ``path`` in a child process (``core/policy/export_worker.py``: the
    exporter would hold this process's interpreter lock for up to ~0.7 s at a time)."""
    r = subprocess.run([sys.executable, "-m", "vla_rl_ros.core.policy.export_worker", str(ckpt), str(path)],
                       capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0 or not path.is_file():
        raise CheckpointError(f"ONNX export of {ckpt} failed (exit {r.returncode}): {r.stderr[-1500:]}")


def onnx_for(ckpt: str | os.PathLike, model, cache_dir: str | os.PathLike | None = None,
             isolated: bool = False) -> Path:
    """The checkpoint's ``model.onnx`` if it ships one, else an export cached by weights hash
    (``isolated``: exported in a child process, for a policy that is serving while it loads)."""
    ckpt = Path(ckpt)
    if (ckpt / "model.onnx").is_file():
        return ckpt / "model.onnx"
    cache = Path(cache_dir or Path.home() / ".cache" / "vla_rl_ros" / "onnx")
    cache.mkdir(parents=True, exist_ok=True)
    key = sha256_file(ckpt / "model.safetensors")[:20]
    path = cache / f"{key}.onnx"
    if not path.is_file():
        if isolated:
            export_in_child(ckpt, path)
        else:
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
        isolate_export: bool = False,
        hold_unclear: bool = True,
    ):
        self.path = str(Path(ckpt).resolve())
        self.backend_kind, self.threads, self.joint_names = backend, threads, joint_names
        self.onnx_cache_dir = onnx_cache_dir
        self.model, self.config = load_checkpoint(ckpt, joint_names=joint_names)
        probe_outputs_finite(self.model)
        self.cfg = self.model.cfg
        self.version = int(self.config.get("version", 0))
        self.text = InstructionEncoder(self.config.get("instructions"))
        # language grounding (core/policy/grounding.py): free-form instruction -> one of the
        # checkpoint's skills, or "not understood"; None for checkpoints without a head (then
        # every instruction is embedded as it is, as before)
        self.grounding = Grounding.load(ckpt, encoder=self.text)
        self.hold_unclear = hold_unclear
        onnx = None
        if backend in ("auto", "onnx", "onnxruntime", "tensorrt"):
            try:
                onnx = onnx_for(ckpt, self.model, onnx_cache_dir, isolated=isolate_export)
            except Exception as e:  # export problems must not stop torch inference
                if backend != "auto":
                    raise CheckpointError(f"cannot export {ckpt} to ONNX: {e}") from e
        self.backend: Backend = make_backend(backend, self.model, onnx, threads=threads)
        self._lock = threading.Lock()

    #: the checkpoint format (``lerobot`` for :class:`~vla_rl_ros.core.policy.lerobot_backend.LeRobotRuntime`)
    format = "vla_rl_ros"

    @property
    def horizon(self) -> int:
        return self.cfg.horizon

    @property
    def cameras(self) -> tuple:
        return tuple(self.cfg.cameras)

    @property
    def language(self) -> str:
        """How the instruction reaches the network: ``grounded`` (mapped onto one of the checkpoint's
        skills, or refused) or ``embedded`` (no grounding head: the sentence embedding as it is)."""
        return "embedded" if self.grounding is None else "grounded"

    def describe(self) -> str:
        return f"policy v{self.version} ({self.backend.describe()}) from {self.path}"

    def understand(self, instruction: str) -> Understanding:
        """What this policy makes of ``instruction`` (raises ObservationError for an empty one,
        or when it cannot be encoded here)."""
        try:
            key = normalize_instruction(instruction)
            if self.grounding is None:
                return Understanding(instruction, key, key, 1.0, True, "no grounding head: taken literally")
            if key in self.grounding.skills:  # a skill's own template: no encoder needed
                return Understanding(instruction, key, key, 1.0, True)
            return self.grounding.understand(key)
        except InstructionError as e:
            raise ObservationError(str(e)) from e

    def understand_now(self, instruction: str) -> Understanding | None:
        """``understand`` when it needs no sentence encoding (a skill's template, an instruction
        in the precomputed table or seen before), else None. Never blocks: for a ROS callback."""
        try:
            key = normalize_instruction(instruction)
        except InstructionError:
            return None
        if self.grounding is None:
            return self.understand(key) if self.text.has(key) else None
        if key in self.grounding.skills:
            return self.understand(key)
        return self.grounding.cached(key)

    def embed(self, instruction: str) -> np.ndarray:
        """The language input the network gets for ``instruction``: its skill's embedding when
        understood; when not, NotUnderstood (``hold_unclear``) or the best guess's embedding."""
        u = self.understand(instruction)
        if not u.understood and (self.hold_unclear or u.best == NONE):
            raise NotUnderstood(f"instruction {instruction!r} not understood: {u.reason}")
        try:
            return self.text.encode(u.skill or u.best)
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


class ChunkRejected(ValueError):
    """A finite chunk that must not be sent to the controller (see :func:`guard_chunk`)."""


@dataclass(frozen=True)
class OutputGuard:
    """What a chunk must satisfy before a controller receives it."""

    lower: np.ndarray  # joint lower limits: every point is clipped into [lower, upper]
    upper: np.ndarray
    max_first_jump: float  # rad: the largest allowed |first point - current state| over the arm joints
    arm_joints: int = 7  # the first ``arm_joints`` entries are the arm (the rest: gripper, in m)


def guard_chunk(chunk: np.ndarray, state: np.ndarray, guard: OutputGuard) -> np.ndarray:
    """Clip ``chunk`` (H, d) to the joint limits; raise :class:`ChunkRejected` when its first
    point is more than ``guard.max_first_jump`` from ``state`` on any arm joint (a policy that
    lost track of the arm would otherwise command a jump)."""
    chunk = np.clip(chunk, guard.lower, guard.upper)
    n = guard.arm_joints
    jump = float(np.max(np.abs(chunk[0, :n] - np.asarray(state)[:n])))
    if jump > guard.max_first_jump:
        raise ChunkRejected(f"first action is {jump:.2f} rad from the current state (> {guard.max_first_jump})")
    return chunk


# what two checkpoints must share for one to replace the other in a running node
SWAP_COMPATIBLE = ("cameras", "image_size", "state_dim", "action_dim", "horizon", "joint_names")


def load_candidate(path: str | os.PathLike, current: PolicyRuntime) -> PolicyRuntime:
    """Build and validate a replacement for ``current`` (off the control path).

    Raises :class:`CheckpointError` unless: every file matches its manifest checksum, the weights
    match their config and are finite, the I/O layout equals the running policy's, and the new
    backend returns finite actions of the right shape on a probe observation (which also warms
    the backend up, so the first real inference after the swap is not slower). For either format
    (a LeRobot policy directory too): :func:`vla_rl_ros.core.policy.factory.load_any_candidate`."""
    new = PolicyRuntime(path, backend=current.backend_kind, joint_names=current.joint_names,
                        threads=current.threads, onnx_cache_dir=current.onnx_cache_dir,
                        isolate_export=True,  # an export must not stall the running version
                        hold_unclear=current.hold_unclear)
    diff = [f"{f}: {getattr(new.cfg, f)!r} != running {getattr(current.cfg, f)!r}"
            for f in SWAP_COMPATIBLE if getattr(new.cfg, f) != getattr(current.cfg, f)]
    if diff:
        raise CheckpointError(f"checkpoint {path} does not fit the running policy ({'; '.join(diff)})")
    # the language encoder is frozen and shared by every version: embeddings the running policy
    # already has (its table + instructions seen so far) carry over, so the first inference after
    # the swap never has to encode text (loading the sentence encoder takes seconds)
    new.text.inherit(current.text)
    cfg = new.cfg
    images = np.full((2, len(cfg.cameras), cfg.image_size, cfg.image_size, 3), 128, dtype=np.uint8)
    images[1] = np.random.default_rng(0).integers(0, 256, images.shape[1:], dtype=np.uint8)
    state = np.stack([new.model.state_mean.numpy()] * 2).astype(np.float32)
    lang = np.zeros((2, cfg.lang_dim), dtype=np.float32)
    for _ in range(3):
        try:
            out = new.infer_batch(images[:1], state[:1], lang[:1])
            out2 = new.infer_batch(images[1:], state[1:], lang[1:])
        except ObservationError as e:
            raise CheckpointError(f"checkpoint {path}: {e} on a probe input") from e
    if out.shape != (1, cfg.horizon, cfg.action_dim) or out2.shape != out.shape:
        raise CheckpointError(f"checkpoint {path}: probe output has shape {out.shape}")
    return new


@dataclass
class SwapEvent:
    event: str  # loaded | swapped | refused | rollback
    path: str
    version: int | None = None
    previous_version: int | None = None
    reason: str = ""
    load_ms: float = 0.0  # announcement -> candidate validated (off the control path)
    swap_us: float = 0.0  # time the inference thread spent swapping
    announce_to_swap_ms: float = 0.0
    wall_time: float = 0.0


class HotSwapper:
    """Holds the active policy, a validated candidate and the previous version.

    ``request(path)`` loads and validates in a background thread; ``active()`` — called by the
    inference thread *between* two inferences — installs a ready candidate (a reference swap,
    microseconds) and returns the policy to use. ``rollback()`` makes the previous version the
    candidate. A refused checkpoint leaves the active policy untouched. ``on_event`` receives
    every :class:`SwapEvent` (the node logs and publishes them)."""

    def __init__(self, runtime: PolicyRuntime, on_event=None, loader=load_candidate):
        self._active = runtime
        self.previous: PolicyRuntime | None = None
        self._ready: tuple[PolicyRuntime, float, str] | None = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._loader = loader
        self.on_event = on_event or (lambda e: None)
        self.events: list[SwapEvent] = []
        # versions pushed out by a swap: released by the loader thread (never on the control
        # path: an ONNX session's destructor takes milliseconds), then the freed memory is handed
        # back to the OS — without that, RSS grew ~20 MB per swap in a 30-minute soak
        self._evicted: list[PolicyRuntime] = []

    def _emit(self, ev: SwapEvent) -> None:
        ev.wall_time = time.time()
        self.events.append(ev)
        self.on_event(ev)

    @property
    def version(self) -> int:
        return self._active.version

    def request(self, path: str, block: bool = False) -> threading.Thread | None:
        t_ann = time.perf_counter()

        def load():
            with self._load_lock:  # one load at a time; announcements queue up in order
                self.release_evicted()
                t0 = time.perf_counter()
                try:
                    if not str(path).strip():
                        raise CheckpointError("empty checkpoint path")
                    cand = self._loader(path, self._active)
                except Exception as e:  # anything wrong with the candidate: refuse it, keep running
                    self._emit(SwapEvent("refused", str(path), reason=f"{type(e).__name__}: {e}",
                                         previous_version=self._active.version,
                                         load_ms=(time.perf_counter() - t0) * 1e3))
                    return
                with self._lock:
                    self._ready = (cand, t_ann, "swapped")
                self._emit(SwapEvent("loaded", cand.path, cand.version, self._active.version,
                                     load_ms=(time.perf_counter() - t0) * 1e3))

        if block:
            load()
            return None
        th = threading.Thread(target=load, name="policy-loader", daemon=True)
        th.start()
        return th

    def release_evicted(self) -> int:
        """Drop the versions earlier swaps pushed out and return their memory to the OS (called by
        the loader thread before each load). Returns how many were released."""
        with self._lock:
            gone, self._evicted = self._evicted, []
        n = len(gone)
        if n:
            del gone
            gc.collect()
            trim_heap()
        return n

    def rollback(self) -> PolicyRuntime:
        """Queue the previous version; raises LookupError when there is none."""
        with self._lock:
            if self.previous is None:
                raise LookupError("no previous policy version to roll back to")
            self._ready = (self.previous, time.perf_counter(), "rollback")
            return self.previous

    def pending(self) -> bool:
        return self._ready is not None

    def active(self, install: bool = True) -> PolicyRuntime:
        """The runtime to infer with; a validated candidate is installed first unless ``install``
        is false (it then waits: a robot graph swaps only while the arm is held)."""
        if self._ready is None or not install:
            return self._active
        t0 = time.perf_counter()
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is None:
            return self._active
        cand, t_ann, kind = ready
        if self.previous is not None and self.previous is not cand:
            self._evicted.append(self.previous)  # freed later, off the control path
        old, self._active, self.previous = self._active, cand, self._active
        swap_us = (time.perf_counter() - t0) * 1e6
        self._emit(SwapEvent(kind, cand.path, cand.version, old.version, swap_us=swap_us,
                             announce_to_swap_ms=(time.perf_counter() - t_ann) * 1e3))
        return self._active


def trim_heap() -> bool:
    """Ask glibc to return freed heap memory to the OS (``malloc_trim``); False where there is no
    glibc (the call is then a no-op)."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def torch_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)
