"""Policy checkpoints: a directory of safetensors weights + JSON, never pickle.

::

    <ckpt>/config.json        policy config, normalisation stats, version, robot joint names
    <ckpt>/model.safetensors  weights (normalisation buffers included)
    <ckpt>/instructions.json  precomputed instruction embeddings (optional)
    <ckpt>/manifest.json      sha256 + size of every file above (written last)

Saving writes into a temporary sibling directory and renames it into place, so a reader never
sees half a checkpoint. Loading refuses — with a message saying what is wrong — a checkpoint
with missing/corrupt files, without normalisation statistics, with a joint layout other than the
robot's, with weights whose names/shapes do not match the config, or with non-finite values.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vla_rl_ros.core.formats import check_format
from vla_rl_ros.core.policy.model import Normalization, PolicyConfig, VLAPolicy
from vla_rl_ros.core.policy.text import MODEL_BUILD_LOCK

FORMAT = "vla_rl_ros.policy/1"


class CheckpointError(ValueError):
    """A checkpoint that must not be loaded."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    model: VLAPolicy,
    out: str | os.PathLike,
    version: int = 0,
    meta: dict | None = None,
    instructions: dict | None = None,
    overwrite: bool = True,
    extra_files: dict | None = None,
) -> Path:
    """Write atomically; ``extra_files`` (name -> source path, e.g. ``model.onnx``) are copied
    in before the manifest so their checksums are covered."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        n = model.norm
        config = {
            "format": FORMAT,
            "version": int(version),
            "policy": model.cfg.to_dict(),
            "normalization": {
                "state_mean": list(n.state_mean), "state_std": list(n.state_std),
                "delta_mean": list(n.delta_mean), "delta_std": list(n.delta_std),
            },
            "created_unix": time.time(),
            "meta": meta or {},
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if instructions:
            (tmp / "instructions.json").write_text(json.dumps(instructions))
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        files = sorted(p.name for p in tmp.iterdir())
        manifest = {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size} for f in files}
        (tmp / "manifest.json").write_text(json.dumps({"files": manifest}, indent=2))
        for p in tmp.iterdir():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            if not overwrite:
                raise FileExistsError(f"checkpoint {out} already exists")
            old = out.parent / f".{out.name}.old{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_config(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist or is not a directory")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} has no config.json")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {str(p)!r}: config.json is not valid JSON ({e})") from e


def verify_files(path: str | os.PathLike) -> dict:
    """Check every file against manifest.json; return the manifest."""
    p = Path(path)
    mpath = p / "manifest.json"
    if not mpath.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} has no manifest.json (incomplete write?)")
    try:
        manifest = json.loads(mpath.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"checkpoint {str(p)!r}: unreadable manifest.json ({e})") from e
    for name, info in manifest.items():
        f = p / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {str(p)!r}: {name} is missing")
        if f.stat().st_size != info["bytes"]:
            raise CheckpointError(
                f"checkpoint {str(p)!r}: {name} has {f.stat().st_size} bytes, manifest says {info['bytes']}"
            )
        if sha256_file(f) != info["sha256"]:
            raise CheckpointError(f"checkpoint {str(p)!r}: {name} fails its sha256 check (corrupt)")
    if "model.safetensors" not in manifest or "config.json" not in manifest:
        raise CheckpointError(f"checkpoint {str(p)!r}: manifest lacks model.safetensors/config.json")
    return manifest


def load_checkpoint(
    path: str | os.PathLike,
    joint_names: list[str] | tuple | None = None,
    verify: bool = True,
    map_location: str = "cpu",
) -> tuple[VLAPolicy, dict]:
    """Load and validate. Returns (model in eval mode, config dict incl. version/meta)."""
    p = Path(path)
    config = read_config(p)
    if verify:
        verify_files(p)
    check_format(config.get("format"), FORMAT, "policy checkpoint", p, CheckpointError)
    if "normalization" not in config or not config["normalization"]:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has no normalisation statistics; refusing to load "
            "(actions would come out in the wrong scale)"
        )
    try:
        cfg = PolicyConfig.from_dict(config["policy"])
        norm = Normalization(**config["normalization"])
        norm.validate(cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(p)!r}: {e}") from e
    if joint_names is not None and tuple(cfg.joint_names) != tuple(joint_names):
        raise CheckpointError(
            f"checkpoint {str(p)!r} was trained for joints {list(cfg.joint_names)}, "
            f"but the robot has {list(joint_names)}"
        )
    try:
        state = load_file(str(p / "model.safetensors"), device=map_location)
    except Exception as e:
        raise CheckpointError(f"checkpoint {str(p)!r}: cannot read model.safetensors ({e})") from e
    with MODEL_BUILD_LOCK:  # see core/policy/text.py
        model = VLAPolicy(cfg, norm)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {str(p)!r}: weights do not match the config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"checkpoint {str(p)!r}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
            )
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"checkpoint {str(p)!r}: {k} contains NaN/Inf")
    model.load_state_dict(state)
    model.eval()
    instr = p / "instructions.json"
    config["instructions"] = json.loads(instr.read_text()) if instr.is_file() else {}
    config["path"] = str(p.resolve())
    return model, config


def probe_outputs_finite(model: VLAPolicy, lang: torch.Tensor | None = None) -> None:
    """Run a probe input; raise CheckpointError if the output is not finite."""
    cfg = model.cfg
    images = torch.full((1, len(cfg.cameras), cfg.image_size, cfg.image_size, 3), 128, dtype=torch.uint8)
    state = model.state_mean[None].clone()
    lang = lang if lang is not None else torch.zeros(1, cfg.lang_dim)
    with torch.no_grad():
        out = model(images, state, lang)
    if not torch.isfinite(out).all():
        raise CheckpointError("checkpoint produces non-finite actions on a probe input")
    if not math.isfinite(float(out.abs().max())):
        raise CheckpointError("checkpoint produces non-finite actions on a probe input")

