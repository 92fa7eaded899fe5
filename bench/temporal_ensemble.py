"""Temporal ensembling of overlapping chunks: success with and without it, paired on the same
held-out seed bank (the ``vla-rl-ros compare`` protocol: same scenes, McNemar p, stratified
paired bootstrap interval), one row per family.

    .venv/bin/python bench/temporal_ensemble.py [--checkpoint models/vla_bc_v4]
        [--decays 0 0.5] [--per-family 200] [--replan-every 1] [--workers 2] [--json out/te.json]

Each setting (``off``: the newest chunk runs alone, as before ensembling existed; a decay d: the
weight of a chunk's prediction is exp(-d · age in ticks), 0 uniform) is evaluated once on the
bank and cached with ``compare``'s cache (``runs/eval_cache``), so a rerun with another decay only
evaluates that one. Every setting is printed against ``off``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.cli import compare  # noqa: E402
from vla_rl_ros.core import stats  # noqa: E402
from vla_rl_ros.core.paths import checkpoint_or_default  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="", help="checkpoint (default: the shipped one)")
    p.add_argument("--decays", nargs="+", type=float, default=[0.0], help="ensemble decays to compare with off")
    p.add_argument("--per-family", type=int, default=stats.BANK_PER_FAMILY)
    p.add_argument("--first-seed", type=int, default=stats.BANK_FIRST_SEED)
    p.add_argument("--replan-every", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", default="runs/eval_cache")
    p.add_argument("--json", default="")
    args = p.parse_args()

    ckpt = str(checkpoint_or_default(args.checkpoint))
    base = compare.CompareConfig(checkpoint_a=ckpt, checkpoint_b=ckpt, per_family=args.per_family,
                                 first_seed=args.first_seed, workers=args.workers, replan_every=args.replan_every,
                                 cache=args.cache)
    base.validate()
    bank = base.bank()
    fams = [f for _, f in bank]
    files = compare.checkpoint_digest(ckpt)
    print(f"{ckpt}: seed bank of {len(bank)} scenes ({args.per_family} per family), replan every {args.replan_every}")
    t0 = time.time()
    settings = {"off": dataclasses.replace(base, temporal_ensemble=False)}
    for d in args.decays:
        settings[f"decay {d:g}"] = dataclasses.replace(base, temporal_ensemble=True, ensemble_decay=d)
    done: dict = {}
    results = {name: compare._results_for(cfg, name, ckpt, files, bank, done) for name, cfg in settings.items()}
    off = [e["success"] for e in results["off"]["episodes"]]
    out = {"checkpoint": ckpt, "bank": [[s, f] for s, f in bank], "replan_every": args.replan_every, "tables": {}}
    for name, res in results.items():
        if name == "off":
            continue
        on = [e["success"] for e in res["episodes"]]
        table = stats.compare_paired(off, on, fams)
        out["tables"][name] = table
        print(f"\nA: off (newest chunk alone)   B: temporal ensemble, {name}")
        print(compare.format_table(table))
    print(f"\n{time.time() - t0:.0f}s; b/c: scenes only A / only B solved (McNemar's exact p); "
          "interval: stratified paired bootstrap")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        out["episodes"] = {name: res["episodes"] for name, res in results.items()}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
