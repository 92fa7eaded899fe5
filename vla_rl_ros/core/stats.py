"""Paired statistics for comparing two policies on the same scenes, and the held-out seed bank.

Two checkpoints A and B run the same episodes (same seed, same task family), so each scene gives
a pair of 0/1 outcomes. Everything here works on those pairs:

* :func:`mcnemar_exact`: exact two-sided McNemar p-value from the discordant counts
  (``b``: A succeeded and B failed, ``c``: A failed and B succeeded; concordant pairs carry no
  information about the difference).
* :func:`paired_bootstrap`: mean of ``b - a`` with a percentile interval from resampling *pairs*
  (the two outcomes of a scene stay together); with ``strata`` (the task family of each pair) the
  pairs are resampled within each stratum, keeping every stratum's size: the stratified bootstrap
  of a stratified design.
* :func:`compare_paired`: the per-family and overall table of ``vla-rl-ros compare``.
* :func:`aggregate_over_runs`: several training runs (seeds) of the same comparison, aggregated
  with a two-level stratified bootstrap (the equivalent of rliable's interval over runs).
* :func:`seed_bank`: the stratified held-out evaluation bank, disjoint from every other seed range
  the project uses (:data:`RESERVED_SEEDS`).

ROS-free and simulator-free: numpy, scipy (imported when a p-value is computed) and the task
family names.
"""

from __future__ import annotations

import math

import numpy as np

from vla_rl_ros.core.sim.tasks import FAMILIES

#: bootstrap resamples of an interval
N_BOOT = 10000
#: two-sided coverage of an interval
CONFIDENCE = 0.95
#: seed of the bootstrap's random generator (the interval is reproducible)
BOOT_SEED = 0

#: first seed of the held-out comparison bank
BANK_FIRST_SEED = 10000
#: scenes per task family in the bank (3 families -> 600 episodes)
BANK_PER_FAMILY = 200
#: seed ranges used elsewhere (inclusive; ``None``: open-ended), which the bank must not touch
RESERVED_SEEDS: dict[str, tuple[int, int | None]] = {
    "README evaluation (evaluate --seed 1000 --episodes 100)": (1000, 1099),
    "language bench (bench/language.py --seed 2000)": (2000, 2099),
    "BC training demonstrations (scripts/train_shipped_policy.sh)": (100000, 101999),
    "DAgger relabelled rollouts (collect --dagger, README: The policy)": (150000, 151999),
    "RL collection (improve --collect-seed 200000)": (200000, None),
}


# ----------------------------------------------------------------------------- tests and intervals
def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value of ``b`` vs ``c`` discordant pairs (binomial test of
    ``min(b, c)`` in ``b + c`` trials at 1/2); 1.0 when there is no discordant pair."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(b, c), b + c, 0.5).pvalue)


def discordant(a, b) -> tuple[int, int]:
    """``(b, c)`` of McNemar's test: pairs where only A succeeded, pairs where only B did."""
    a, b = _pair(a, b)
    return int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))


def resample_indices(n: int, strata=None, n_boot: int = N_BOOT, rng=None) -> np.ndarray:
    """``(n_boot, n)`` indices of bootstrap resamples of ``n`` pairs: with replacement over all
    pairs, or, with ``strata`` (one label per pair), within each stratum, so that every resample
    holds exactly as many pairs of each stratum as the data."""
    rng = np.random.default_rng(rng)
    if strata is None:
        return rng.integers(0, n, size=(n_boot, n))
    strata = np.asarray(strata)
    if len(strata) != n:
        raise ValueError(f"{len(strata)} stratum labels for {n} pairs")
    out = np.empty((n_boot, n), dtype=np.int64)
    col = 0
    for s in _ordered_unique(strata):
        members = np.flatnonzero(strata == s)
        out[:, col:col + len(members)] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
        col += len(members)
    return out


def percentile_interval(samples, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap ``samples`` (percentile method)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    lo, hi = np.quantile(np.asarray(samples, dtype=np.float64), [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_bootstrap(a, b, strata=None, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                     confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(diff, lo, hi)``: mean of ``b - a`` over paired 0/1 outcomes and its ``confidence``
    percentile interval from ``n_boot`` resamples of the pairs (within each stratum when
    ``strata`` is given: :func:`resample_indices`)."""
    a, b = _pair(a, b)
    d = b - a
    idx = resample_indices(len(d), strata, n_boot, seed)
    lo, hi = percentile_interval(d[idx].mean(axis=1), confidence)
    return float(d.mean()), lo, hi


def paired_summary(a, b, strata=None, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                   confidence: float = CONFIDENCE) -> dict:
    """One row of a paired comparison: ``n``, success rates ``a_rate`` and ``b_rate``, ``diff``
    (b - a), its interval ``ci`` at ``confidence``, McNemar's ``b``/``c`` and ``p``."""
    a, b = _pair(a, b)
    diff, lo, hi = paired_bootstrap(a, b, strata, n_boot, seed, confidence)
    nb, nc = discordant(a, b)
    return {"n": int(len(a)), "a_rate": float(a.mean()), "b_rate": float(b.mean()), "diff": diff,
            "ci": [lo, hi], "confidence": confidence, "b": nb, "c": nc, "p": mcnemar_exact(nb, nc)}


def compare_paired(a, b, families, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                   confidence: float = CONFIDENCE) -> dict:
    """Per family (in first-seen order) and ``"overall"``: :func:`paired_summary` of A's and B's
    outcomes on the same episodes. A family's interval resamples its own pairs; the overall
    interval is the stratified bootstrap over families (each family keeps its size)."""
    a, b = _pair(a, b)
    families = np.asarray([str(f) for f in families])
    if len(families) != len(a):
        raise ValueError(f"{len(families)} families for {len(a)} pairs")
    out = {}
    for f in _ordered_unique(families):
        m = families == f
        out[str(f)] = paired_summary(a[m], b[m], None, n_boot, seed, confidence)
    out["overall"] = paired_summary(a, b, families, n_boot, seed, confidence)
    return out


def aggregate_over_runs(runs, n_boot: int = N_BOOT, seed: int = BOOT_SEED, confidence: float = CONFIDENCE) -> dict:
    """A comparison repeated over several training runs (seeds): ``runs`` is a list of
    ``(a, b, families)``, one per run, each paired on its own episodes.

    Point estimate: the mean over runs of each run's mean ``b - a`` (runs weigh equally).
    Interval: two-level stratified bootstrap, as rliable's interval over runs: each resample draws
    ``len(runs)`` runs with replacement and, independently for every drawn run, resamples that
    run's pairs within its families (:func:`resample_indices`); the statistic is the mean of the
    drawn runs' resampled means. Returns ``runs``, ``per_run`` (each run's diff), ``diff``, ``ci``,
    ``confidence``."""
    if not runs:
        raise ValueError("no runs to aggregate")
    rng = np.random.default_rng(seed)
    diffs = []
    for a, b, fams in runs:
        a, b = _pair(a, b)
        diffs.append(b - a)
    r = len(diffs)
    picks = rng.integers(0, r, size=(n_boot, r))  # which run fills slot j of resample i
    total = np.zeros(n_boot)
    for j in range(r):
        for k, (d, (_, _, fams)) in enumerate(zip(diffs, runs)):
            rows = np.flatnonzero(picks[:, j] == k)
            if len(rows):
                idx = resample_indices(len(d), fams, len(rows), rng)
                total[rows] += d[idx].mean(axis=1)
    lo, hi = percentile_interval(total / r, confidence)
    per_run = [float(d.mean()) for d in diffs]
    return {"runs": r, "per_run": per_run, "diff": float(np.mean(per_run)), "ci": [lo, hi], "confidence": confidence}


# ----------------------------------------------------------------------------- the seed bank
def seed_bank(first_seed: int = BANK_FIRST_SEED, per_family: int = BANK_PER_FAMILY,
              families=FAMILIES) -> list[tuple[int, str]]:
    """The held-out comparison bank: ``(seed, family)`` pairs, ``per_family`` scenes of each
    family, every seed used once. Interleaved (``first_seed`` pick, ``+1`` push, ``+2`` place,
    ``+3`` pick, ...), so a smaller bank is a prefix of a larger one. Raises ``ValueError`` when
    the seeds would touch a range in :data:`RESERVED_SEEDS`."""
    families = tuple(families)
    if per_family < 1 or not families:
        raise ValueError(f"a seed bank needs per_family >= 1 and a family (got {per_family}, {families})")
    if first_seed < 0:
        raise ValueError(f"first_seed must be >= 0, got {first_seed}")
    last = first_seed + per_family * len(families) - 1
    for what, (lo, hi) in RESERVED_SEEDS.items():
        if first_seed <= (math.inf if hi is None else hi) and lo <= last:
            raise ValueError(f"seed bank {first_seed}..{last} overlaps the seeds of the {what}: "
                             f"{lo}..{'' if hi is None else hi}")
    return [(first_seed + i * len(families) + j, f) for i in range(per_family) for j, f in enumerate(families)]


def bank_digest(bank) -> str:
    """sha256 of a bank's ``(seed, family)`` list (the evaluation cache's key part)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([[int(s), str(f)] for s, f in bank]).encode()).hexdigest()


# ----------------------------------------------------------------------------- helpers
def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} vs {len(b)}")
    if len(a) == 0:
        raise ValueError("no pairs")
    return a, b


def _ordered_unique(x) -> list:
    seen: dict = {}
    for v in np.asarray(x).tolist():
        seen.setdefault(v, None)
    return list(seen)
