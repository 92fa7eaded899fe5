"""LeRobot policies (``PreTrainedPolicy.save_pretrained`` directories) behind the policy runtime.

A LeRobot policy directory holds ``config.json`` (with a ``"type"``: ``act``, ``diffusion``,
``smolvla``, ``pi0``, ...), ``model.safetensors`` and, since lerobot 0.4, the normalisation as
processor pipelines: ``policy_preprocessor.json`` / ``policy_postprocessor.json`` and their state
files. The project's own checkpoints have ``"format": "vla_rl_ros.policy/1"`` in their
config.json instead (:func:`is_lerobot_dir` tells them apart without importing lerobot).

:class:`LeRobotRuntime` offers what the policy node, ``evaluate`` and the hot swap use of
:class:`~vla_rl_ros.core.policy.runtime.PolicyRuntime`:

* cameras: the checkpoint's ``observation.images.<camera>`` input features, in their order (the
  node subscribes to those cameras); each uint8 (H, W, 3) frame is resized to the feature's shape
  if needed and handed to the policy as float [0, 1] (C, H, W), as lerobot's own
  ``prepare_observation_for_inference`` does;
* ``observation.state``: the robot's joint vector, whose size must equal the feature's;
* the instruction: passed as lerobot's ``task`` string to language-conditioned policies
  (``smolvla``, ``pi0``, ...), unused by the others (``act``, ``diffusion``: ``language`` is
  ``"none"`` and the node's status says so);
* output: ``predict_action_chunk`` -> the saved postprocessor (unnormalisation) -> an (H, d) chunk
  of absolute joint targets, H the policy's chunk length.

What a LeRobot policy does not have here: the project's instruction grounding (a LeRobot policy
cannot refuse an instruction it does not understand; it acts), and the Gaussian policy the RL
trainer needs (``train-rl`` / ``improve`` take the project's checkpoints only). Exploration noise
around μ still works: the exploration node only needs μ.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vla_rl_ros.core.policy.backends import Backend
from vla_rl_ros.core.policy.checkpoint import CheckpointError

#: the policy types lerobot 0.4's ``get_policy_class`` knows
LEROBOT_POLICY_TYPES = ("act", "diffusion", "pi0", "pi05", "pi0_fast", "smolvla", "tdmpc", "vqbet", "groot",
                        "xvla", "wall_x", "sac", "sarm", "reward_classifier")
#: types that read the instruction (lerobot's ``task``); the others ignore it
LANGUAGE_POLICY_TYPES = frozenset({"pi0", "pi05", "pi0_fast", "smolvla", "groot", "xvla", "wall_x"})
IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
MODEL_FILE = "model.safetensors"


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_lerobot_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory whose config.json names a lerobot policy ``type`` (and no
    vla_rl_ros ``format``). Cheap: reads one JSON file, imports nothing."""
    p = Path(path)
    cfg = _read_json(p / "config.json") if p.is_dir() else None
    return bool(cfg) and "format" not in cfg and isinstance(cfg.get("type"), str)


def read_lerobot_config(path: str | os.PathLike) -> dict:
    """config.json of a LeRobot policy directory, or :class:`CheckpointError` saying why it is not one."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"LeRobot policy {str(p)!r} does not exist or is not a directory")
    if not (p / "config.json").is_file():
        raise CheckpointError(f"LeRobot policy {str(p)!r} has no config.json")
    cfg = _read_json(p / "config.json")
    if cfg is None:
        raise CheckpointError(f"LeRobot policy {str(p)!r}: config.json is not a JSON object")
    if "format" in cfg:
        raise CheckpointError(f"{str(p)!r} is a vla_rl_ros checkpoint (format {cfg['format']!r}), not a LeRobot "
                              "policy: use backend auto, torch or onnxruntime")
    kind = cfg.get("type")
    if not isinstance(kind, str):
        raise CheckpointError(f"{str(p)!r}: config.json has no lerobot policy \"type\" (not a LeRobot policy "
                              "directory written by save_pretrained)")
    if kind not in LEROBOT_POLICY_TYPES:
        raise CheckpointError(f"LeRobot policy {str(p)!r}: unknown policy type {kind!r} "
                              f"(lerobot 0.4 knows {', '.join(LEROBOT_POLICY_TYPES)})")
    if not (p / MODEL_FILE).is_file():
        raise CheckpointError(f"LeRobot policy {str(p)!r} has no {MODEL_FILE}")
    for f in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE):
        if not (p / f).is_file():
            raise CheckpointError(f"LeRobot policy {str(p)!r} has no {f}: lerobot >= 0.4 keeps the normalisation "
                                  "in the processor files save_pretrained writes next to the model; without "
                                  "them the actions would come out in the wrong scale")
    return cfg


@dataclass(frozen=True)
class LeRobotLayout:
    """The I/O of a LeRobot policy as the graph sees it."""

    kind: str  # lerobot policy type
    cameras: tuple[str, ...]
    image_shapes: tuple[tuple[int, int], ...]  # (H, W) per camera
    state_dim: int
    action_dim: int
    language: str  # "task": the instruction is the policy's task string; "none": not used

    @property
    def image_size(self) -> int:
        return self.image_shapes[0][0]


def _layout(path: Path, kind: str, pcfg) -> LeRobotLayout:
    """Map the policy's input/output features onto the graph's inputs, or CheckpointError."""
    from lerobot.configs.types import FeatureType

    cams, shapes, other = [], [], []
    state_dim = None
    for key, ft in pcfg.input_features.items():
        shape = tuple(int(s) for s in ft.shape)
        if ft.type is FeatureType.VISUAL:
            if not key.startswith(IMAGE_PREFIX) or len(shape) != 3 or shape[0] != 3:
                raise CheckpointError(f"LeRobot policy {str(path)!r}: image input {key!r} with shape {shape}; "
                                      f"expected '{IMAGE_PREFIX}<camera>' RGB (3, H, W)")
            cams.append(key[len(IMAGE_PREFIX):])
            shapes.append((shape[1], shape[2]))
        elif key == STATE_KEY:
            state_dim = shape[0] if len(shape) == 1 else None
            if state_dim is None:
                raise CheckpointError(f"LeRobot policy {str(path)!r}: {STATE_KEY} has shape {shape}, expected (d,)")
        else:
            other.append(key)
    if other:
        raise CheckpointError(f"LeRobot policy {str(path)!r} needs input(s) {other} the graph does not provide "
                              f"(it provides {IMAGE_PREFIX}<camera> and {STATE_KEY})")
    if not cams:
        raise CheckpointError(f"LeRobot policy {str(path)!r} takes no camera image ({IMAGE_PREFIX}<camera>)")
    if state_dim is None:
        raise CheckpointError(f"LeRobot policy {str(path)!r} takes no {STATE_KEY}")
    act = pcfg.output_features.get(ACTION_KEY)
    if act is None or len(act.shape) != 1:
        raise CheckpointError(f"LeRobot policy {str(path)!r} has no '{ACTION_KEY}' output of shape (d,)")
    return LeRobotLayout(kind, tuple(cams), tuple(shapes), int(state_dim), int(act.shape[0]),
                         "task" if kind in LANGUAGE_POLICY_TYPES else "none")


def _device(requested: str | None) -> str:
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_lerobot_policy(path: str | os.PathLike, device: str | None = None):
    """(policy in eval mode, preprocessor, postprocessor, layout) of a LeRobot policy directory, loaded
    with lerobot's own classes; CheckpointError when anything does not fit."""
    p = Path(path)
    cfg_json = read_lerobot_config(p)
    kind = cfg_json["type"]
    dev = _device(device)
    try:
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors
    except ImportError as e:
        raise CheckpointError(f"cannot import lerobot's policies ({e}); install lerobot's runtime requirements "
                              "(requirements/base.txt)") from e
    try:
        pcfg = PreTrainedConfig.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # draccus: a field this lerobot does not know, a bad value
        raise CheckpointError(f"LeRobot policy {str(p)!r}: config.json does not parse as a {kind} config "
                              f"({type(e).__name__}: {e})") from e
    pcfg.device = dev
    if hasattr(pcfg, "pretrained_backbone_weights"):
        pcfg.pretrained_backbone_weights = None  # the weights come from model.safetensors: never download
    if int(getattr(pcfg, "n_obs_steps", 1) or 1) > 1:
        raise CheckpointError(f"LeRobot policy {str(p)!r} ({kind}) needs a history of {pcfg.n_obs_steps} "
                              "observations; only single-observation policies are supported here")
    layout = _layout(p, kind, pcfg)
    try:
        cls = get_policy_class(kind)
    except (ImportError, NotImplementedError, ValueError) as e:
        raise CheckpointError(f"LeRobot policy {str(p)!r}: cannot load policy type {kind!r} ({e})") from e
    try:
        policy = cls.from_pretrained(str(p), config=pcfg, strict=True, local_files_only=True)
    except Exception as e:
        raise CheckpointError(f"LeRobot policy {str(p)!r}: {MODEL_FILE} does not load into a {kind} policy "
                              f"({type(e).__name__}: {str(e)[:500]})") from e
    policy.eval()
    overrides = {}
    for fname, key in ((PREPROCESSOR_FILE, "preprocessor_overrides"), (POSTPROCESSOR_FILE, "postprocessor_overrides")):
        steps = (_read_json(p / fname) or {}).get("steps", [])
        if any(isinstance(s, dict) and s.get("registry_name") == "device_processor" for s in steps):
            # the device it was trained on may not be here; the postprocessor brings actions to the CPU
            overrides[key] = {"device_processor": {"device": dev if key == "preprocessor_overrides" else "cpu"}}
    try:
        pre, post = make_pre_post_processors(pcfg, pretrained_path=str(p), **overrides)
    except Exception as e:
        raise CheckpointError(f"LeRobot policy {str(p)!r}: its processor files do not load "
                              f"({type(e).__name__}: {str(e)[:500]})") from e
    return policy, pre, post, layout


def observation_batch(images: np.ndarray, state: np.ndarray, tasks, cameras, device) -> dict:
    """The batch lerobot's policies take: ``observation.images.<cam>`` float [0, 1] (B, 3, H, W),
    ``observation.state`` (B, d), ``task`` (B strings) — lerobot's own inference conversion
    (``prepare_observation_for_inference``), for a batch."""
    images = torch.as_tensor(np.ascontiguousarray(images))
    batch = {}
    for i, cam in enumerate(cameras):
        batch[IMAGE_PREFIX + cam] = (images[:, i].to(torch.float32) / 255).permute(0, 3, 1, 2).contiguous().to(device)
    batch[STATE_KEY] = torch.as_tensor(np.array(state, dtype=np.float32)).to(device)
    batch["task"] = [str(t) for t in tasks]
    batch["robot_type"] = [""] * len(batch["task"])
    return batch


class LeRobotBackend(Backend):
    """``infer(images (B, n_cam, H, W, 3) uint8, state (B, d), tasks (B strings)) -> (B, H, d)``: the
    Backend contract with the language input as lerobot's task strings."""

    name = "lerobot"

    def __init__(self, path: str | os.PathLike, device: str | None = None, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.policy, self.pre, self.post, self.layout = load_lerobot_policy(path, device)
        self.device = torch.device(self.policy.config.device)

    def infer(self, images, state, lang):
        tasks = [lang] * len(state) if isinstance(lang, str) else list(lang)
        with torch.inference_mode():
            batch = self.pre(observation_batch(images, state, tasks, self.layout.cameras, self.device))
            chunk = self.policy.predict_action_chunk(batch)
            chunk = self.post(chunk)
        return chunk.float().cpu().numpy()

    def describe(self):
        return f"lerobot {self.layout.kind} ({self.device.type})"


class NoInstructionEncoder:
    """Stands for the sentence encoder where the policy takes the instruction as text (or not at all)."""

    def preload(self) -> None:
        pass

    def inherit(self, other) -> None:
        pass

    def has(self, key: str) -> bool:
        return True

    def encode(self, text: str) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class _Cfg:
    """The fields of the project's PolicyConfig the node, ``evaluate`` and the hot swap read."""

    cameras: tuple[str, ...]
    image_size: int
    image_shapes: tuple[tuple[int, int], ...]
    state_dim: int
    action_dim: int
    horizon: int
    joint_names: tuple[str, ...] | None
    lang_dim: int = 0


def lerobot_version(path: str | os.PathLike) -> int:
    """A version number for a LeRobot policy: the training step of lerobot's checkpoint layout
    (``checkpoints/<step>/pretrained_model``, ``training_state/training_step.json``), else 0."""
    p = Path(path).resolve()
    step = _read_json(p.parent / "training_state" / "training_step.json")
    if step and isinstance(step.get("step"), int):
        return int(step["step"])
    return int(p.parent.name) if p.name == "pretrained_model" and p.parent.name.isdigit() else 0


class LeRobotRuntime:
    """A LeRobot policy in the place of :class:`~vla_rl_ros.core.policy.runtime.PolicyRuntime`:
    validated observations in, a finite (H, d) chunk of joint targets out."""

    format = "lerobot"

    def __init__(self, ckpt: str | os.PathLike, backend: str = "lerobot", joint_names=None, threads: int | None = None,
                 onnx_cache_dir: str | None = None, isolate_export: bool = False, hold_unclear: bool = True,
                 device: str | None = None):
        from vla_rl_ros.core.policy.runtime import ObservationError

        self.path = str(Path(ckpt).resolve())
        self.backend_kind, self.threads, self.joint_names = "lerobot", threads, joint_names
        self.onnx_cache_dir, self.hold_unclear = onnx_cache_dir, hold_unclear
        self.backend = LeRobotBackend(ckpt, device=device, threads=threads)
        lay = self.layout = self.backend.layout
        if joint_names is not None:
            n = len(joint_names)
            if lay.state_dim != n:
                raise CheckpointError(f"LeRobot policy {self.path!r}: {STATE_KEY} has {lay.state_dim} entries, but "
                                      f"the robot's joint state has {n} ({list(joint_names)})")
            if lay.action_dim != n:
                raise CheckpointError(f"LeRobot policy {self.path!r}: its action has {lay.action_dim} entries, but "
                                      f"the robot takes {n} joint targets ({list(joint_names)})")
        self.version = lerobot_version(ckpt)
        self.text = NoInstructionEncoder()
        self.grounding = None
        self._lock = threading.Lock()
        # a probe observation: the chunk length, and finite outputs before anything is served
        probe = self.probe_inputs()
        try:
            out = self.infer_batch(*probe)
        except ObservationError as e:
            raise CheckpointError(f"LeRobot policy {self.path!r}: {e} on a probe input") from e
        except Exception as e:  # noqa: BLE001 (a policy type without predict_action_chunk, a shape error)
            raise CheckpointError(f"LeRobot policy {self.path!r} fails on a probe input "
                                  f"({type(e).__name__}: {str(e)[:500]})") from e
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[2] != lay.action_dim:
            raise CheckpointError(f"LeRobot policy {self.path!r}: probe chunk has shape {out.shape}, "
                                  f"expected (1, H, {lay.action_dim})")
        self.cfg = _Cfg(lay.cameras, lay.image_size, lay.image_shapes, lay.state_dim, lay.action_dim,
                        int(out.shape[1]), tuple(joint_names) if joint_names is not None else None)

    # ---------------------------------------------------------------- what the node reads
    @property
    def horizon(self) -> int:
        return self.cfg.horizon

    @property
    def cameras(self) -> tuple:
        return self.layout.cameras

    @property
    def language(self) -> str:
        """``none``: the instruction is not used; ``task``: passed to the policy as its task string."""
        return self.layout.language

    def describe(self) -> str:
        return f"LeRobot {self.layout.kind} policy v{self.version} ({self.backend.describe()}) from {self.path}"

    def probe_inputs(self) -> tuple:
        """A mid-grey image per camera and the state the normaliser centres on (its mean, when it has one)."""
        lay = self.layout
        h, w = lay.image_shapes[0]
        images = np.full((1, len(lay.cameras), h, w, 3), 128, dtype=np.uint8) if len(set(lay.image_shapes)) == 1 \
            else None
        if images is None:  # cameras of different sizes: the backend gets each at its own size
            raise CheckpointError(f"LeRobot policy {self.path!r}: cameras of different sizes {lay.image_shapes} "
                                  "are not supported")
        state = np.zeros((1, lay.state_dim), dtype=np.float32)
        for step in getattr(self.backend.pre, "steps", []):
            stats = getattr(step, "stats", None) or {}
            mean = (stats.get(STATE_KEY) or {}).get("mean")
            if mean is not None and np.size(mean) == lay.state_dim:
                state[0] = np.asarray(mean.cpu() if isinstance(mean, torch.Tensor) else mean, dtype=np.float32)
        return images, state, ["probe"]

    # ---------------------------------------------------------------- language
    def _understanding(self, instruction: str):
        from vla_rl_ros.core.policy.grounding import Understanding
        from vla_rl_ros.core.policy.runtime import ObservationError
        from vla_rl_ros.core.policy.text import InstructionError, normalize_instruction

        try:
            key = normalize_instruction(instruction)
        except InstructionError as e:
            raise ObservationError(str(e)) from e
        if self.language == "none":
            reason = f"{self.layout.kind} takes no instruction: not used (the policy does what it was trained on)"
        else:
            reason = f"passed to the {self.layout.kind} policy as its task (no grounding: it cannot refuse)"
        return Understanding(instruction, key, key, 1.0, True, reason)

    def understand(self, instruction: str):
        return self._understanding(instruction)

    def understand_now(self, instruction: str):
        try:
            return self._understanding(instruction)
        except ValueError:
            return None

    def embed(self, instruction: str) -> np.ndarray:
        self._understanding(instruction)
        return self.text.encode(instruction)

    # ---------------------------------------------------------------- inference
    def check(self, obs) -> np.ndarray:
        """Validate ``obs``; returns its images as (1, n_cam, H, W, 3) at the policy's size."""
        from vla_rl_ros.core.policy.runtime import ObservationError

        lay = self.layout
        missing = [c for c in lay.cameras if c not in obs.images]
        if missing:
            raise ObservationError(f"missing camera image(s) {missing}; the policy needs {list(lay.cameras)}")
        frames = []
        for c, (h, w) in zip(lay.cameras, lay.image_shapes):
            img = obs.images[c]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
                raise ObservationError(f"camera {c}: expected a uint8 array, got {getattr(img, 'dtype', type(img))}")
            if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
                raise ObservationError(f"camera {c}: image is {img.shape}, expected (H, W, 3)")
            if img.shape[:2] != (h, w):
                import cv2

                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            frames.append(img)
        state = np.asarray(obs.state)
        if state.shape != (lay.state_dim,):
            raise ObservationError(f"state has shape {state.shape}, the LeRobot policy's {STATE_KEY} is "
                                   f"({lay.state_dim},)")
        if not np.all(np.isfinite(state)):
            raise ObservationError(f"state contains NaN/Inf: {state.tolist()}")
        if not str(obs.instruction).strip():
            raise ObservationError("empty instruction")
        return np.stack(frames)[None]

    def infer_batch(self, images: np.ndarray, state: np.ndarray, tasks) -> np.ndarray:
        from vla_rl_ros.core.policy.runtime import ObservationError

        out = self.backend.infer(images, state, tasks)
        if not np.all(np.isfinite(out)):
            raise ObservationError("policy produced non-finite actions; nothing published")
        return out.astype(np.float64)

    def infer(self, obs) -> np.ndarray:
        images = self.check(obs)
        state = np.asarray(obs.state, dtype=np.float32)[None]
        with self._lock:
            return self.infer_batch(images, state, [str(obs.instruction)])[0]


#: what two LeRobot policies must share for one to replace the other in a running node
SWAP_COMPATIBLE = ("cameras", "image_shapes", "state_dim", "action_dim", "horizon")


def load_lerobot_candidate(path: str | os.PathLike, current) -> LeRobotRuntime:
    """The hot swap's loader for a LeRobot policy replacing a running LeRobot policy: loaded,
    probed (finite chunk of the right shape) and checked for the same I/O layout; CheckpointError
    otherwise (swapping between a LeRobot policy and the project's format is refused: their
    camera/instruction handling differ)."""
    if not isinstance(current, LeRobotRuntime):
        raise CheckpointError(f"{str(path)!r} is a LeRobot policy but the running policy is a vla_rl_ros checkpoint: "
                              "restart the node with the new policy instead of hot-swapping across formats")
    cfg = _read_json(Path(path) / "config.json") or {}
    if "format" in cfg:
        raise CheckpointError(f"{str(path)!r} is a vla_rl_ros checkpoint (format {cfg['format']!r}) but the running "
                              "policy is a LeRobot policy: restart the node with it instead of hot-swapping across "
                              "formats")
    new = LeRobotRuntime(path, joint_names=current.joint_names, threads=current.threads,
                         hold_unclear=current.hold_unclear, device=str(current.backend.device))
    diff = [f"{f}: {getattr(new.cfg, f)!r} != running {getattr(current.cfg, f)!r}"
            for f in SWAP_COMPATIBLE if getattr(new.cfg, f) != getattr(current.cfg, f)]
    if diff:
        raise CheckpointError(f"LeRobot policy {path} does not fit the running policy ({'; '.join(diff)})")
    return new
