"""Language benchmark: does the policy follow phrasings it was never trained on, and does it
refuse what it cannot do?

    .venv/bin/python bench/language.py [--scenes 100] [--seed 2000] [--workers 2]
        [--checkpoints models/vla_bc_v3 models/vla_bc_v4] [--splits template held_out train]

For every family (pick, push, place) and every scene seed, each checkpoint runs the same scene
once per phrasing split: the task's template ("pick up the red cube"), a training phrasing and a
held-out phrasing (``core/sim/phrasings.py``: whole verbs, nouns and sentence shapes training
never saw; the same phrasing for a seed every run). All conditions are paired on the same
scenes. Reported per family: success, "instructed cube moved most" (pick and push), refusals;
the paired difference held-out - template with a 95% interval and an exact McNemar p-value.
Then the refusal rate on held-out nonsense / impossible instructions and on held-out valid
phrasings (no simulation needed). Writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def paired(a: list[bool], b: list[bool]) -> dict:
    """b - a on the same scenes: difference, 95% interval (paired bootstrap), exact McNemar p
    (``vla_rl_ros/core/stats.py``, as ``vla-rl-ros compare``)."""
    from vla_rl_ros.core.stats import paired_summary

    s = paired_summary(a, b)
    return {"diff": s["diff"], "ci95": s["ci"], "p": s["p"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", nargs="+", default=["models/vla_bc_v3", "models/vla_bc_v4"])
    ap.add_argument("--splits", nargs="+", default=["template", "held_out", "train"])
    ap.add_argument("--families", nargs="+", default=["pick", "push", "place"])
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="out/language.json")
    args = ap.parse_args()

    from vla_rl_ros.core.policy.evaluate import evaluate_parallel
    from vla_rl_ros.core.sim.phrasings import impossible_instructions, nonsense_instructions, phrasing_for
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    seeds = list(range(args.seed, args.seed + args.scenes))
    world = PandaWorld(SimConfig(image_width=32, image_height=32, cameras=(), renderer="tiny"))
    specs = {}
    for fam in args.families:
        for s in seeds:
            world.reset(seed=s, family=fam)
            specs[(fam, s)] = world.task.spec
    results: dict = {}
    t0 = time.time()
    for ckpt in args.checkpoints:
        for split in args.splits:
            for fam in args.families:
                texts = [phrasing_for(specs[(fam, s)], split, s) for s in seeds]
                rs = evaluate_parallel(ckpt, seeds, workers=args.workers, family=fam, instructions=texts)
                rows = [{"seed": r.seed, "instruction": r.instruction, "success": r.success,
                         "moved": r.moved, "target": specs[(fam, r.seed)].target, "refused": r.failure == "refused"}
                        for r in rs]
                results.setdefault(ckpt, {}).setdefault(split, {})[fam] = rows
                ok = sum(r["success"] for r in rows)
                print(f"[{time.time() - t0:6.0f}s] {Path(ckpt).name:12s} {split:9s} {fam:6s} success {ok}/{len(rows)}",
                      flush=True)

    from vla_rl_ros.core.policy.runtime import PolicyRuntime
    from vla_rl_ros.core.robot import PANDA

    refusal = {}
    negatives = nonsense_instructions("held_out") + impossible_instructions("held_out")
    for ckpt in args.checkpoints:
        rt = PolicyRuntime(ckpt, joint_names=PANDA.joint_names, threads=1)
        valid = [phrasing_for(spec, "held_out", s) for (fam, s), spec in specs.items()]
        refusal[ckpt] = {
            "negatives": len(negatives), "negatives_refused": sum(not rt.understand(t).understood for t in negatives),
            "valid": len(valid), "valid_refused": sum(not rt.understand(t).understood for t in valid),
        }

    print("\n| checkpoint | family | phrasing | success | instructed cube moved most | refused |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for ckpt, by_split in results.items():
        for fam in args.families:
            for split in args.splits:
                rows = by_split[split][fam]
                n = len(rows)
                succ = sum(r["success"] for r in rows)
                moved = sum(r["moved"] == r["target"] for r in rows)
                ref = sum(r["refused"] for r in rows)
                mm = f"{100 * moved / n:.0f}%" if fam != "place" else "-"
                print(f"| {Path(ckpt).name} | {fam} | {split} | {succ}/{n} ({100 * succ / n:.0f}%) | {mm} | {ref} |")
                summary.setdefault(ckpt, {}).setdefault(fam, {})[split] = {
                    "success": succ, "n": n, "moved_most": moved, "refused": ref}
    print("\npaired on the same scenes (b - a, 95% interval, McNemar p):")
    comparisons = []
    for ckpt, by_split in results.items():
        for fam in args.families:
            if "template" in by_split and "held_out" in by_split:
                a = [r["success"] for r in by_split["template"][fam]]
                b = [r["success"] for r in by_split["held_out"][fam]]
                c = paired(a, b)
                comparisons.append({"what": f"{Path(ckpt).name} {fam}: held_out - template", **c})
    if len(args.checkpoints) >= 2:
        base, new = args.checkpoints[0], args.checkpoints[-1]
        for split in args.splits:
            for fam in args.families:
                a = [r["success"] for r in results[base][split][fam]]
                b = [r["success"] for r in results[new][split][fam]]
                comparisons.append({"what": f"{fam} {split}: {Path(new).name} - {Path(base).name}", **paired(a, b)})
    for c in comparisons:
        print(f"  {c['what']}: {100 * c['diff']:+.1f} points [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}], "
              f"p={c['p']:.3g}")
    print("\nrefusals (no simulation):")
    for ckpt, r in refusal.items():
        print(f"  {Path(ckpt).name}: nonsense/impossible refused {r['negatives_refused']}/{r['negatives']} "
              f"({100 * r['negatives_refused'] / r['negatives']:.0f}%); held-out valid phrasings refused "
              f"{r['valid_refused']}/{r['valid']} ({100 * r['valid_refused'] / r['valid']:.1f}%)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary, "comparisons": comparisons,
                                          "refusal": refusal, "episodes": results}, indent=1))
    print(f"\n{args.out}; {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
