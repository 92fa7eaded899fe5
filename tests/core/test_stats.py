"""Paired statistics (``core/stats.py``), the held-out seed bank and ``vla-rl-ros compare``: the
statistics without simulation; one short end-to-end ``compare`` of the shipped checkpoint against
itself (diff 0, JSON written, the second run served from the cache)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vla_rl_ros.core import stats
from vla_rl_ros.core.sim.tasks import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "vla_bc_v4"


# ----------------------------------------------------------------------------- McNemar
@pytest.mark.parametrize("b, c, p", [
    (0, 5, 0.0625),                 # 2 * (1/2)^5
    (5, 0, 0.0625),
    (3, 3, 1.0),
    (0, 0, 1.0),
    (1, 9, 2 * (1 + 10) / 2 ** 10),  # 2 * (C(10,0) + C(10,1)) / 2^10
    (2, 8, 2 * (1 + 10 + 45) / 2 ** 10),
])
def test_mcnemar_exact_hand_computed(b, c, p):
    assert stats.mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_equals_the_binomial_sum_it_replaced():
    for b in range(0, 12):
        for c in range(0, 12):
            n, k = b + c, min(b, c)
            old = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
            assert stats.mcnemar_exact(b, c) == pytest.approx(old, rel=1e-9)


def test_discordant_counts():
    a = [1, 1, 0, 0, 1, 0]
    b = [1, 0, 1, 1, 1, 0]
    assert stats.discordant(a, b) == (1, 2)  # only A: pair 2; only B: pairs 3, 4


# ----------------------------------------------------------------------------- bootstrap
def _synthetic(n, rng, pa=0.6, pb=0.7):
    return rng.random(n) < pa, rng.random(n) < pb  # true diff pb - pa


def test_bootstrap_interval_covers_the_true_difference():
    rng = np.random.default_rng(1)
    covered = 0
    reps = 100
    for r in range(reps):
        a, b = _synthetic(200, rng)
        diff, lo, hi = stats.paired_bootstrap(a, b, n_boot=2000, seed=r)
        assert lo <= diff <= hi
        covered += lo <= 0.1 <= hi
    assert covered >= 0.88 * reps  # nominal 95%; 100 repetitions


def test_bootstrap_interval_shrinks_with_n():
    rng = np.random.default_rng(2)
    widths = []
    for n in (200, 800, 3200):
        a, b = _synthetic(n, rng)
        _, lo, hi = stats.paired_bootstrap(a, b, n_boot=2000)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert 0.35 < widths[1] / widths[0] < 0.65 and 0.35 < widths[2] / widths[1] < 0.65  # ~ 1/sqrt(4)


def test_bootstrap_is_reproducible_and_uses_the_defaults():
    rng = np.random.default_rng(3)
    a, b = _synthetic(100, rng)
    assert stats.paired_bootstrap(a, b) == stats.paired_bootstrap(a, b, n_boot=stats.N_BOOT, seed=stats.BOOT_SEED,
                                                                  confidence=stats.CONFIDENCE)
    _, lo90, hi90 = stats.paired_bootstrap(a, b, confidence=0.90)
    _, lo95, hi95 = stats.paired_bootstrap(a, b)
    assert hi90 - lo90 < hi95 - lo95


def test_stratified_resampling_keeps_each_stratum_size():
    strata = np.array(["pick"] * 5 + ["push"] * 3 + ["place"] * 7 + ["push"] * 2)
    idx = stats.resample_indices(len(strata), strata, n_boot=500, rng=0)
    assert idx.shape == (500, len(strata))
    want = {s: int(np.sum(strata == s)) for s in set(strata)}
    for row in idx:
        got = strata[row]
        assert {s: int(np.sum(got == s)) for s in want} == want


def test_stratified_bootstrap_removes_between_stratum_variance():
    # B beats A on every "pick" scene, ties on every "push" scene: with strata the resampled mean
    # is always 0.5; resampling across strata mixes the two and gives an interval around 0.5
    a = np.zeros(40)
    b = np.r_[np.ones(20), np.zeros(20)]
    fams = ["pick"] * 20 + ["push"] * 20
    diff, lo, hi = stats.paired_bootstrap(a, b, strata=fams, n_boot=1000)
    assert diff == lo == hi == 0.5
    _, lo2, hi2 = stats.paired_bootstrap(a, b, n_boot=1000)
    assert lo2 < 0.5 < hi2


def test_identical_a_and_b_give_zero_and_p_one():
    rng = np.random.default_rng(4)
    a = rng.random(60) < 0.5
    fams = [FAMILIES[i % 3] for i in range(60)]
    table = stats.compare_paired(a, a.copy(), fams, n_boot=500)
    assert list(table) == list(FAMILIES) + ["overall"]
    for row in table.values():
        assert row["diff"] == 0.0 and row["ci"] == [0.0, 0.0] and row["p"] == 1.0
        assert row["b"] == row["c"] == 0 and row["a_rate"] == row["b_rate"]
    assert table["overall"]["n"] == 60 and table["pick"]["n"] == 20


def test_compare_paired_counts_per_family():
    a = [1, 0, 1, 1, 0, 0]
    b = [1, 1, 0, 1, 1, 1]
    fams = ["pick", "pick", "push", "push", "place", "place"]
    t = stats.compare_paired(a, b, fams, n_boot=200)
    assert (t["pick"]["b"], t["pick"]["c"]) == (0, 1)
    assert (t["push"]["b"], t["push"]["c"]) == (1, 0)
    assert (t["place"]["b"], t["place"]["c"]) == (0, 2)
    o = t["overall"]
    assert (o["b"], o["c"], o["n"]) == (1, 3, 6)
    assert o["diff"] == pytest.approx(2 / 6) and o["a_rate"] == pytest.approx(0.5)
    assert o["p"] == pytest.approx(stats.mcnemar_exact(1, 3))
    with pytest.raises(ValueError, match="length"):
        stats.compare_paired([1, 0], [1], ["pick", "pick"])


# ----------------------------------------------------------------------------- over runs
def _run_with_diff(k: int, n: int = 30):
    """A run of n pairs (10 per family) in which B wins exactly k scenes per family."""
    fams = [f for f in FAMILIES for _ in range(n // 3)]
    a = np.zeros(n)
    b = np.array([1.0 if i % (n // 3) < k else 0.0 for i in range(n)])
    return a, b, fams


def test_aggregate_over_runs():
    runs = [_run_with_diff(0), _run_with_diff(1), _run_with_diff(2)]
    agg = stats.aggregate_over_runs(runs, n_boot=2000)
    assert agg["runs"] == 3
    assert agg["per_run"] == pytest.approx([0.0, 0.1, 0.2])
    assert agg["diff"] == pytest.approx(0.1)
    lo, hi = agg["ci"]
    assert -0.05 < lo < 0.1 < hi < 0.25  # runs drawn from 0, 0.1, 0.2 plus resampling within runs
    # runs that agree: a narrower interval than runs that disagree
    same = stats.aggregate_over_runs([_run_with_diff(1)] * 3, n_boot=2000)
    assert same["diff"] == pytest.approx(0.1)
    assert same["ci"][1] - same["ci"][0] < hi - lo
    # identical A and B in every run
    zero = stats.aggregate_over_runs([(r[0], r[0], r[2]) for r in runs], n_boot=200)
    assert zero["diff"] == 0.0 and zero["ci"] == [0.0, 0.0]
    with pytest.raises(ValueError):
        stats.aggregate_over_runs([])


# ----------------------------------------------------------------------------- seed bank
def test_seed_bank_default_is_stratified_and_disjoint():
    bank = stats.seed_bank()
    assert len(bank) == 600 and stats.BANK_PER_FAMILY == 200
    assert {f: sum(1 for _, g in bank if g == f) for f in FAMILIES} == {f: 200 for f in FAMILIES}
    seeds = [s for s, _ in bank]
    assert len(set(seeds)) == 600 and min(seeds) == 10000 and max(seeds) == 10599
    for lo, hi in stats.RESERVED_SEEDS.values():
        assert all(not (lo <= s <= (hi if hi is not None else math.inf)) for s in seeds)
    assert stats.seed_bank(per_family=2) == bank[:6]  # a small bank is a prefix of a larger one


@pytest.mark.parametrize("first, per_family", [(1000, 1), (950, 50), (2099, 1), (100500, 1), (99990, 10),
                                               (250000, 1)])
def test_seed_bank_refuses_reserved_seeds(first, per_family):
    with pytest.raises(ValueError, match="overlaps"):
        stats.seed_bank(first, per_family)


def test_bank_digest_depends_on_seeds_and_families():
    bank = stats.seed_bank(per_family=2)
    assert stats.bank_digest(bank) == stats.bank_digest(list(bank))
    assert stats.bank_digest(bank) != stats.bank_digest(stats.seed_bank(per_family=3))
    swapped = [(s, "place" if f == "pick" else f) for s, f in bank]
    assert stats.bank_digest(bank) != stats.bank_digest(swapped)


def test_stats_imports_nothing_heavy():
    code = ("import sys, vla_rl_ros.core.stats as s\ns.mcnemar_exact(1, 2)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'torch', 'pybullet')]\n"
            "assert not bad, bad\nprint('OK')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr[-2000:]


def test_language_bench_uses_these_statistics():
    spec = importlib.util.spec_from_file_location("bench_language", ROOT / "bench" / "language.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert not hasattr(mod, "mcnemar")
    got = mod.paired([1, 1, 0, 0, 1], [1, 0, 1, 1, 1])
    assert set(got) == {"diff", "ci95", "p"}
    assert got["diff"] == pytest.approx(0.2) and got["p"] == pytest.approx(stats.mcnemar_exact(1, 2))
    assert got["ci95"][0] <= got["diff"] <= got["ci95"][1]


# ----------------------------------------------------------------------------- compare
def test_compare_imports_no_rclpy():
    code = ("import sys\nimport vla_rl_ros.cli.compare\nfrom vla_rl_ros.cli import main\n"
            "try:\n    main(['compare', '--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rcl_interfaces', 'std_msgs')]\n"
            "assert not bad, bad\nprint('OK')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-2000:]


def test_compare_refuses_bad_input(tmp_path, capsys):
    from vla_rl_ros.cli import main

    with pytest.raises(SystemExit) as e:
        main(["compare", str(SHIPPED), str(SHIPPED), "--first-seed", "1000", "--cache", ""])
    assert e.value.code == 2 and "overlaps the seeds of the README evaluation" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["compare", str(tmp_path / "nope"), str(SHIPPED), "--cache", ""])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    bad = tmp_path / "corrupt"
    shutil.copytree(SHIPPED, bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(SystemExit) as e:
        main(["compare", str(SHIPPED), str(bad), "--per-family", "1", "--cache", str(tmp_path / "cache")])
    assert e.value.code == 2 and "fails its sha256 check" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # both checkpoints are checked before any episode runs


def test_cache_key_is_exact(tmp_path):
    from vla_rl_ros.cli.compare import CompareConfig, _cache_get, _cache_put, _digest, cache_key

    cfg = CompareConfig(checkpoint_a="x", checkpoint_b="y", cache=str(tmp_path), per_family=1)
    files = {"config.json": "0" * 64, "model.safetensors": "1" * 64}
    bank = cfg.bank()
    key = cache_key(cfg, files, bank)
    _cache_put(cfg, key, [{"seed": 1}])
    assert _cache_get(cfg, key) == [{"seed": 1}]
    variants = [
        cache_key(CompareConfig(checkpoint_a="x", checkpoint_b="y", cache=str(tmp_path), per_family=1, max_steps=60),
                  files, bank),
        cache_key(CompareConfig(checkpoint_a="x", checkpoint_b="y", cache=str(tmp_path), per_family=1,
                                replan_every=2), files, bank),
        cache_key(CompareConfig(checkpoint_a="x", checkpoint_b="y", cache=str(tmp_path), per_family=1,
                                backend="torch"), files, bank),
        cache_key(CompareConfig(checkpoint_a="x", checkpoint_b="y", cache=str(tmp_path), per_family=1,
                                renderer="egl"), files, bank),
        cache_key(CompareConfig(checkpoint_a="x", checkpoint_b="y", cache=str(tmp_path), per_family=1,
                                temporal_ensemble=not cfg.temporal_ensemble), files, bank),
        cache_key(CompareConfig(checkpoint_a="x", checkpoint_b="y", cache=str(tmp_path), per_family=1,
                                temporal_ensemble=True, ensemble_decay=0.5), files, bank),
        cache_key(cfg, {**files, "model.safetensors": "2" * 64}, bank),
        cache_key(cfg, files, stats.seed_bank(per_family=2)),
    ]
    for v in variants:
        assert _digest(v) != _digest(key) and _cache_get(cfg, v) is None
    # the whole stored key must match, not only the file name
    path = tmp_path / f"{_digest(key)[:32]}.json"
    doc = json.loads(path.read_text())
    doc["key"]["max_steps"] = 1
    path.write_text(json.dumps(doc))
    assert _cache_get(cfg, key) is None
    # '' disables the cache
    off = CompareConfig(checkpoint_a="x", checkpoint_b="y", cache="", per_family=1)
    _cache_put(off, key, [{"seed": 1}])
    assert _cache_get(off, key) is None
    # "auto" evaluates with onnxruntime in worker processes: one cache entry for both
    auto = CompareConfig(checkpoint_a="x", checkpoint_b="y", cache=str(tmp_path), per_family=1, backend="auto")
    assert cache_key(auto, files, bank) == key


def test_compare_end_to_end_and_cache_hit(tmp_path, monkeypatch, capsys):
    """Two copies of the shipped checkpoint on a 3-episode bank: diff 0, JSON written; the second
    run is served from the cache without evaluating."""
    from vla_rl_ros.cli import main
    from vla_rl_ros.core.policy import evaluate as ev

    a = tmp_path / "a"
    b = tmp_path / "b"
    shutil.copytree(SHIPPED, a)
    shutil.copytree(SHIPPED, b)
    cache = tmp_path / "cache"
    out = tmp_path / "cmp.json"
    argv = ["compare", str(a), str(b), "--per-family", "1", "--max-steps", "30", "--workers", "2",
            "--cache", str(cache), "--json", str(out), "--boot", "1000"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for row in (*FAMILIES, "overall"):
        assert any(line.startswith(row) for line in text.splitlines()), text
    doc = json.loads(out.read_text())
    assert doc["A"]["cache"] == "cache miss, evaluated" and doc["B"]["cache"] == "same as A"
    assert doc["bank"] == [[10000, "pick"], [10001, "push"], [10002, "place"]]
    assert [e["seed"] for e in doc["A"]["episodes"]] == [10000, 10001, 10002]
    assert [e["family"] for e in doc["B"]["episodes"]] == list(FAMILIES)
    assert all(e["steps"] <= 30 for e in doc["A"]["episodes"])
    t = doc["table"]
    assert list(t) == list(FAMILIES) + ["overall"]
    assert t["overall"]["diff"] == 0.0 and t["overall"]["p"] == 1.0 and t["overall"]["n"] == 3
    assert doc["CompareConfig"]["per_family"] == 1 and doc["CompareConfig"]["max_steps"] == 30
    assert len(list(cache.glob("*.json"))) == 1

    def boom(*args, **kw):
        raise AssertionError("evaluated although the cache holds these episodes")

    monkeypatch.setattr(ev, "evaluate_parallel", boom)
    out2 = tmp_path / "cmp2.json"
    assert main(argv[:-3] + [str(out2), "--boot", "1000"]) == 0
    doc2 = json.loads(out2.read_text())
    assert doc2["A"]["cache"] == "cache hit"
    assert doc2["A"]["episodes"] == doc["A"]["episodes"] and doc2["table"] == doc["table"]
