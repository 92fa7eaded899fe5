"""Which checkpoints a running policy may be told to load (ROS-free).

Anyone who can publish on the robot's DDS domain can announce weights on
``/vla/policy/weights``; the policy node must not load whatever they name. Before a candidate is
even opened, :meth:`WeightsTrust.check` requires:

* a plain path (no NUL byte, at most :data:`MAX_PATH_CHARS` characters) to an existing directory;
* that directory, with every symbolic link resolved, inside one of the **allowed directories**
  (a link from an allowed directory to elsewhere is refused);
* with a key configured: ``manifest.sig`` in the checkpoint, the HMAC-SHA256 of its
  ``manifest.json`` under that key. The manifest lists the sha256 of every file of the
  checkpoint and the loader verifies each of them, so the signature covers the weights, the
  config, the ONNX export and the embeddings.

The checksums alone catch corruption; the signature catches a checkpoint that is internally
consistent but was not made by someone holding the key. The key file is read once, at start-up.
What this does not cover: a process that can write into an allowed directory *and* read the key
(keep the key readable only by the trainer's and the policy's user), and the DDS transport
itself (SROS2 for that; see the README).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from vla_rl_ros.core.policy.checkpoint import CheckpointError

#: file in a checkpoint holding the hex HMAC-SHA256 of its manifest.json
SIGNATURE_FILE = "manifest.sig"
#: longest announced path accepted (characters)
MAX_PATH_CHARS = 4096
#: shortest key accepted (bytes, after stripping surrounding whitespace)
MIN_KEY_BYTES = 16


class UntrustedCheckpoint(CheckpointError):
    """The checkpoint may be well-formed, but this policy is not allowed to load it."""


def read_key(path: str | os.PathLike) -> bytes:
    """The HMAC key stored in ``path`` (surrounding whitespace stripped); a clear error if the
    file is missing or the key is shorter than :data:`MIN_KEY_BYTES`."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as e:
        raise ValueError(f"weights key file {str(path)!r} unreadable: {e}") from e
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"weights key file {str(path)!r} holds {len(key)} bytes; at least {MIN_KEY_BYTES} needed")
    return key


def signature(ckpt: str | os.PathLike, key: bytes) -> str:
    """Hex HMAC-SHA256 of the checkpoint's manifest.json under ``key``."""
    manifest = Path(ckpt) / "manifest.json"
    try:
        data = manifest.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {str(ckpt)!r} has no readable manifest.json ({e})") from e
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sign_checkpoint(ckpt: str | os.PathLike, key: bytes) -> Path:
    """Write ``manifest.sig`` into ``ckpt`` (atomically: a temporary file renamed into place)."""
    ckpt = Path(ckpt)
    out = ckpt / SIGNATURE_FILE
    tmp = ckpt / f".{SIGNATURE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(signature(ckpt, key) + "\n")
    os.replace(tmp, out)
    return out


@dataclass(frozen=True)
class WeightsTrust:
    """``allowed_dirs``: directories (resolved) under which checkpoints may be loaded;
    ``key``: when set, a checkpoint must carry a valid ``manifest.sig``."""

    allowed_dirs: tuple[Path, ...]
    key: bytes | None = None

    @classmethod
    def build(cls, allowed: tuple[str, ...] | list[str], key_file: str = "") -> "WeightsTrust":
        dirs = tuple(Path(d).expanduser().resolve() for d in allowed if str(d).strip())
        if not dirs:
            raise ValueError("no allowed weights directory")
        return cls(dirs, read_key(key_file) if key_file else None)

    def describe(self) -> str:
        signed = "signed with the configured key" if self.key is not None else "unsigned accepted"
        return f"weights from {', '.join(map(str, self.allowed_dirs))} ({signed})"

    def check(self, path: str | os.PathLike) -> Path:
        """The resolved checkpoint directory, or :class:`UntrustedCheckpoint` saying why not."""
        text = str(path)
        if not text.strip():
            raise UntrustedCheckpoint("empty checkpoint path")
        if "\x00" in text or len(text) > MAX_PATH_CHARS:
            raise UntrustedCheckpoint(f"not a usable path ({len(text)} characters"
                                      f"{', NUL byte' if chr(0) in text else ''})")
        try:
            real = Path(text).expanduser().resolve(strict=True)
        except (OSError, RuntimeError) as e:
            raise UntrustedCheckpoint(f"{text!r} does not exist ({type(e).__name__})") from e
        if not real.is_dir():
            raise UntrustedCheckpoint(f"{text!r} is not a checkpoint directory")
        if not any(real == d or real.is_relative_to(d) for d in self.allowed_dirs):
            via = f" (resolves to {str(real)!r})" if str(real) != text else ""
            raise UntrustedCheckpoint(f"{text!r}{via} is outside the allowed weights directories "
                                      f"({', '.join(map(str, self.allowed_dirs))})")
        if self.key is not None:
            sig = real / SIGNATURE_FILE
            try:
                got = sig.read_text().strip()
            except OSError as e:
                raise UntrustedCheckpoint(f"{text!r} is not signed ({SIGNATURE_FILE} missing) and a key is "
                                          "configured") from e
            if not hmac.compare_digest(got, signature(real, self.key)):
                raise UntrustedCheckpoint(f"{text!r}: {SIGNATURE_FILE} does not match its manifest under the "
                                          "configured key")
        return real


def trusted_loader(trust: WeightsTrust):
    """A :class:`~vla_rl_ros.core.policy.runtime.HotSwapper` loader that checks ``trust`` before
    opening anything (the policy node's); either checkpoint format (``core/policy/factory.py``)."""
    from vla_rl_ros.core.policy.factory import load_any_candidate

    return lambda path, current: load_any_candidate(trust.check(path), current)


def default_allowed_dirs(start_checkpoint: str | os.PathLike, runs: str | os.PathLike = "runs") -> tuple[str, ...]:
    """Where a policy may load weights from when not told: the directory holding the checkpoint
    it started from (its siblings: the shipped models, a trainer's earlier rounds) and ``runs``
    (the trainer's and ``improve``'s default output root), relative to the working directory."""
    return (str(Path(start_checkpoint).resolve().parent), str(Path(runs).resolve()))
