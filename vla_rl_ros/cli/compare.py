"""``vla-rl-ros compare A B``: two checkpoints on the same held-out scenes, paired.

Both checkpoints run every scene of the seed bank (``core/stats.seed_bank``: ``--per-family``
scenes of each task family from ``--first-seed``, disjoint from every other seed range) with the
direct loop (``evaluate --direct``: no ROS, worker processes). Each scene gives a pair of
outcomes; the table reports per family and overall the success of A and B, the paired
difference B - A with a stratified-bootstrap interval, and McNemar's exact test on the discordant
pairs (``core/stats.py``). Per-episode results are cached under ``--cache``, keyed by the
checkpoint's file contents and everything else that decides an episode, so a baseline compared
many times is evaluated once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from vla_rl_ros.cli.common import build_or_die, die, require_ray
from vla_rl_ros.core import stats
from vla_rl_ros.core.config import add_fields, opt, require, to_dict
from vla_rl_ros.core.control import DECAY_HELP, ENSEMBLE_DECAY, ENSEMBLE_HELP, TEMPORAL_ENSEMBLE
from vla_rl_ros.core.node_config import BACKENDS, RENDERERS
from vla_rl_ros.core.parallel import ray_option

HELP = "paired comparison of two checkpoints on the held-out seed bank (McNemar, bootstrap interval)"

#: format of a cache entry (bump when an episode's result changes meaning)
CACHE_FORMAT = "vla_rl_ros.eval_cache/1"


@dataclass(frozen=True)
class CompareConfig:
    checkpoint_a: str = opt("", "checkpoint A (the baseline)", positional=True)
    checkpoint_b: str = opt("", "checkpoint B (the candidate; the table reports B - A)", positional=True)
    per_family: int = opt(stats.BANK_PER_FAMILY, "scenes per task family in the seed bank")
    first_seed: int = opt(stats.BANK_FIRST_SEED, "first seed of the bank (must avoid the training, collection "
                                                 "and other evaluation seeds)")
    workers: int = opt(2, "evaluation processes (Ray actors with --ray)")
    ray: str | None = ray_option()
    max_steps: int = opt(120, "episode length limit (control ticks)")
    replan_every: int = opt(1, "infer on every n-th observation")
    temporal_ensemble: bool = opt(TEMPORAL_ENSEMBLE, ENSEMBLE_HELP)
    ensemble_decay: float = opt(ENSEMBLE_DECAY, DECAY_HELP)
    backend: str = opt("onnxruntime", "inference backend", choices=BACKENDS)
    renderer: str = opt("tiny", "PyBullet renderer", choices=RENDERERS)
    boot: int = opt(stats.N_BOOT, "bootstrap resamples of each interval")
    boot_seed: int = opt(stats.BOOT_SEED, "seed of the bootstrap (the interval is reproducible)")
    confidence: float = opt(stats.CONFIDENCE, "coverage of the intervals")
    cache: str = opt("runs/eval_cache", "per-episode results cached here, keyed by checkpoint contents, bank and "
                                        "loop settings ('' disables)")
    json: str = opt("", "write both checkpoints' per-episode results, the table and this configuration here")

    def validate(self) -> None:
        require(bool(self.checkpoint_a) and bool(self.checkpoint_b), "give two checkpoints: compare A B")
        require(self.per_family >= 1, "--per-family must be >= 1")
        require(self.workers >= 1, "--workers must be >= 1")
        require(self.max_steps >= 1, "--max-steps must be >= 1")
        require(self.replan_every >= 1, "--replan-every must be >= 1")
        require(self.boot >= 100, "--boot must be >= 100 (resamples of an interval)")
        require(0.0 < self.confidence < 1.0, "--confidence must be in (0, 1)")
        self.bank()  # raises (a ConfigError's ValueError) when the bank touches a reserved seed range

    def bank(self) -> list[tuple[int, str]]:
        return stats.seed_bank(self.first_seed, self.per_family)

    @property
    def resolved_backend(self) -> str:
        return "onnxruntime" if self.backend == "auto" else self.backend  # as evaluate --direct --workers


def add_arguments(p) -> None:
    add_fields(p, CompareConfig)


def main(args) -> int:
    cfg = build_or_die(CompareConfig, args)
    require_ray(cfg.ray)
    bank = cfg.bank()
    print(f"seed bank: {len(bank)} episodes ({cfg.per_family} per family), seeds {bank[0][0]}..{bank[-1][0]}")
    t0 = time.time()
    ckpts = {"A": cfg.checkpoint_a, "B": cfg.checkpoint_b}
    files = {side: checkpoint_digest(ckpt) for side, ckpt in ckpts.items()}  # both checked before any episode
    done: dict[str, dict] = {}  # cache key digest -> evaluation (A and B with the same contents run once)
    sides = {side: _results_for(cfg, side, ckpts[side], files[side], bank, done) for side in ckpts}
    a = [e["success"] for e in sides["A"]["episodes"]]
    b = [e["success"] for e in sides["B"]["episodes"]]
    fams = [f for _, f in bank]
    table = stats.compare_paired(a, b, fams, n_boot=cfg.boot, seed=cfg.boot_seed, confidence=cfg.confidence)
    elapsed = time.time() - t0
    print(f"\nA: {cfg.checkpoint_a}\nB: {cfg.checkpoint_b}\n")
    print(format_table(table, cfg.confidence))
    print("b/c: scenes only A / only B solved (McNemar's exact test on them: p); "
          f"interval: stratified paired bootstrap, {cfg.boot} resamples")
    print(f"{elapsed:.0f}s (A: {sides['A']['cache']}, B: {sides['B']['cache']})")
    if cfg.json:
        out = Path(cfg.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"verb": "compare", "CompareConfig": to_dict(cfg), "bank": [[s, f] for s, f in bank],
               "table": table, "seconds": elapsed, "A": sides["A"], "B": sides["B"]}
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"results: {out}")
    return 0


# ----------------------------------------------------------------------------- table
def format_table(table: dict, confidence: float = stats.CONFIDENCE) -> str:
    """Rows: the families, then overall; rates, differences and intervals in percentage points."""
    head = ("family", "n", "A %", "B %", "B-A pts", f"{100 * confidence:g}% CI (pts)", "b/c", "p")
    rows = [head]
    for name, r in table.items():
        rows.append((name, str(r["n"]), f"{100 * r['a_rate']:.1f}", f"{100 * r['b_rate']:.1f}",
                     f"{100 * r['diff']:+.1f}", f"[{100 * r['ci'][0]:+.1f}, {100 * r['ci'][1]:+.1f}]",
                     f"{r['b']}/{r['c']}", f"{r['p']:.3g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- evaluation + cache
def checkpoint_digest(ckpt: str) -> dict:
    """``{file: sha256}`` of every file of the checkpoint (those its manifest lists: weights,
    config with the normalisation, ONNX export, instruction embeddings, grounding), hashed from
    the files themselves; a missing or corrupt checkpoint is a clear error (exit 2)."""
    from vla_rl_ros.core.policy.checkpoint import CheckpointError, read_config, sha256_file, verify_files

    try:
        read_config(ckpt)
        manifest = verify_files(ckpt)
    except (CheckpointError, FileNotFoundError) as e:
        die(str(e))
    return {name: sha256_file(Path(ckpt) / name) for name in sorted(manifest)}


def cache_key(cfg: CompareConfig, files: dict, bank) -> dict:
    """Everything an episode's outcome depends on. Equal keys: equal results (the loop is
    deterministic given the weights, the scene and the loop settings)."""
    key = {"format": CACHE_FORMAT, "checkpoint_files": files, "bank_sha256": stats.bank_digest(bank),
           "episodes": len(bank), "max_steps": cfg.max_steps, "replan_every": cfg.replan_every,
           "backend": cfg.resolved_backend, "renderer": cfg.renderer}
    if cfg.temporal_ensemble:  # (keys without it: the loop without ensembling, as before it existed)
        key["ensemble_decay"] = cfg.ensemble_decay
    return key


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _cache_get(cfg: CompareConfig, key: dict):
    if not cfg.cache:
        return None
    path = Path(cfg.cache) / f"{_digest(key)[:32]}.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc["episodes"] if doc.get("key") == key else None  # exact: the whole key must match


def _cache_put(cfg: CompareConfig, key: dict, episodes: list[dict]) -> None:
    if not cfg.cache:
        return
    d = Path(cfg.cache)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{_digest(key)[:32]}.json"
    tmp = d / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"key": key, "episodes": episodes}))
    os.replace(tmp, path)  # a reader never sees half an entry


def _results_for(cfg: CompareConfig, side: str, ckpt: str, files: dict, bank, done: dict) -> dict:
    key = cache_key(cfg, files, bank)
    digest = _digest(key)
    if digest in done:
        print(f"{side}: same contents and settings as A: its episodes are A's")
        return {**done[digest], "checkpoint": ckpt, "cache": "same as A"}
    episodes = _cache_get(cfg, key)
    status = "cache hit"
    if episodes is None:
        status = "evaluated" if not cfg.cache else "cache miss, evaluated"
        episodes = _evaluate(cfg, side, ckpt, bank)
        _cache_put(cfg, key, episodes)
    else:
        print(f"{side}: {ckpt}: {len(episodes)} episodes from the cache ({cfg.cache})")
    got = [(int(e["seed"]), str(e["family"])) for e in episodes]
    if got != [(int(s), str(f)) for s, f in bank]:  # never pair different scenes
        die(f"{side}: results do not match the seed bank (cache entry {digest[:32]} in {cfg.cache}?)", 1)
    res = {"checkpoint": ckpt, "key": key, "cache": status, "episodes": episodes}
    done[digest] = res
    return res


def _evaluate(cfg: CompareConfig, side: str, ckpt: str, bank) -> list[dict]:
    from tqdm import tqdm

    from vla_rl_ros.core.policy.checkpoint import CheckpointError
    from vla_rl_ros.core.policy.evaluate import evaluate_parallel
    from vla_rl_ros.core.policy.factory import open_runtime
    from vla_rl_ros.core.robot import PANDA

    try:  # the checks evaluate makes (joint layout, weights vs config, finite values, backend) before any worker
        rt = open_runtime(ckpt, backend=cfg.resolved_backend, joint_names=PANDA.joint_names, threads=1)
    except (CheckpointError, FileNotFoundError) as e:
        die(str(e))
    where = f"{cfg.workers} processes" if cfg.ray is None else f"{cfg.workers} Ray actors, {cfg.ray}"
    print(f"{side}: evaluating {rt.describe()} directly (no ROS, {where})")
    del rt
    bar = tqdm(total=len(bank), unit="ep", desc=f"evaluate {side}", dynamic_ncols=True)

    def progress(res, dt):
        bar.n = len(res)
        bar.set_postfix(success=f"{sum(r.success for r in res)}/{len(res)}")
        bar.refresh()

    try:
        results = evaluate_parallel(ckpt, [s for s, _ in bank], workers=cfg.workers, families=[f for _, f in bank],
                                    replan_every=cfg.replan_every, backend=cfg.resolved_backend,
                                    max_steps=cfg.max_steps, renderer=cfg.renderer, progress=progress,
                                    temporal_ensemble=cfg.temporal_ensemble, ensemble_decay=cfg.ensemble_decay,
                                    ray_address=cfg.ray)
    finally:
        bar.close()
    return [dict(r.__dict__) for r in results]
