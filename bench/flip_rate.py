"""Flip rate: can exploration find the fix? Of the scenes the mean policy μ fails, the share that
succeed at least once in K explored rollouts — per exploration setting (σ, k tokens open loop, ρ).

    .venv/bin/python bench/flip_rate.py [--checkpoint models/vla_bc_v4] [--scenes 60]
        [--rollouts 4] [--settings 0.02:1:0 0.03:4:0.9 ...] [--keep-scenes 20] [--workers 2]

A setting ``σ:k:ρ[:τ]`` is the arm joints' exploration σ (rad), the decision unit k (the policy
plans every k ticks, the chunk's first k tokens run open loop), the correlation ρ of the noise of
consecutive tokens (0: white) and the discrete gripper's temperature τ (m; 0 or absent: the
gripper executes μ; ``core/rl/exploration.py``). Scenes are stratified by task family
(``--scenes / 3`` each, seeds from ``--first-seed``, disjoint from training, collection and the
README's evaluation seeds). Per setting it prints:

* **flip rate**: failing scenes with ≥ 1 success in ``--rollouts`` explored rollouts (the signal an
  update can learn from: a group whose rollouts all fail carries none), with a 95% Wilson interval;
* the explored rollouts' success on those failing scenes;
* **keep rate**: on up to ``--keep-scenes`` scenes μ solves, the share an explored rollout still
  solves (what the noise costs).

Writes ``--out`` (JSON) and a plot next to it. The mean policy's outcomes come from the same loop
with ``mode="deploy"`` (μ executed, replanning every tick: the deployed policy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: default exploration settings σ:k:ρ (the landed default first)
DEFAULT_SETTINGS = ("0.02:1:0", "0.005:1:0", "0.01:1:0", "0.005:4:0.9", "0.01:4:0.9")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / d
    return max(0.0, c - h), min(1.0, c + h)


def parse_setting(text: str) -> tuple[float, int, float, float]:
    """``σ:k:ρ[:τ]`` -> (σ, k, ρ, τ); τ the discrete gripper's temperature (m), default 0 (not explored)."""
    try:
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ValueError
        out = float(parts[0]), int(parts[1]), float(parts[2]), float(parts[3]) if len(parts) == 4 else 0.0
    except ValueError:
        raise SystemExit(f"bad setting {text!r}: expected sigma:k:rho[:tau], e.g. 0.03:4:0.9 or 0.01:4:0.9:0.003")
    if out[0] <= 0 or out[1] < 1 or not 0.0 <= out[2] < 1.0 or out[3] < 0:
        raise SystemExit(f"bad setting {text!r}: sigma > 0, k >= 1, 0 <= rho < 1, tau >= 0")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="models/vla_bc_v4")
    ap.add_argument("--scenes", type=int, default=60, help="scenes (split evenly over the task families)")
    ap.add_argument("--first-seed", type=int, default=30000)
    ap.add_argument("--rollouts", type=int, default=4, help="explored rollouts per failing scene (K)")
    ap.add_argument("--keep-scenes", type=int, default=20, help="scenes μ solves, one explored rollout each")
    ap.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), help="σ:k:ρ each")
    ap.add_argument("--explore-seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=120)
    ap.add_argument("--out", default="out/flip_rate.json")
    args = ap.parse_args()
    settings = [parse_setting(s) for s in args.settings]

    from tqdm import tqdm

    from vla_rl_ros.core.collect import DirectCollectConfig, rollout_outcomes
    from vla_rl_ros.core.policy.checkpoint import read_config
    from vla_rl_ros.core.sim.tasks import FAMILIES

    ckpt = str(Path(args.checkpoint).resolve())
    size = int(read_config(ckpt)["policy"]["image_size"])
    per = max(1, args.scenes // len(FAMILIES))
    scenes = [(args.first_seed + j, fam) for fam in FAMILIES for j in range(per)]
    base = DirectCollectConfig(policy=ckpt, image_size=size, max_steps=args.max_steps, explore_seed=args.explore_seed)

    def run(cfg, jobs, desc):
        bar = tqdm(total=len(jobs), desc=desc, unit="ep", dynamic_ncols=True, leave=False)
        try:
            return rollout_outcomes(cfg, jobs, args.workers, progress=lambda n: bar.update(1))
        finally:
            bar.close()

    t0 = time.time()
    mean = run(DirectCollectConfig(**{**base.__dict__, "mode": "deploy"}), [(s, f, 0) for s, f in scenes], "μ")
    failing = [(r["seed"], r["family"]) for r in mean if not r["success"]]
    # the keep rate's scenes: round-robin over the families (pick is the most fragile to noise)
    by_fam = {f: [(r["seed"], r["family"]) for r in mean if r["success"] and r["family"] == f] for f in FAMILIES}
    solved = [by_fam[f][i] for i in range(len(scenes)) for f in FAMILIES if i < len(by_fam[f])][: args.keep_scenes]
    print(f"μ ({args.checkpoint}): {len(scenes) - len(failing)}/{len(scenes)} scenes solved; "
          f"{len(failing)} failing scenes × {args.rollouts} explored rollouts per setting "
          f"(+ {len(solved)} solved scenes × 1 for the keep rate) [{time.time() - t0:.0f} s]")
    rows = []
    for sigma, k, rho, tau in settings:
        cfg = DirectCollectConfig(**{**base.__dict__, "sigma": (sigma,), "replan_every": k, "rho": rho,
                                     "gripper_temperature": tau})
        t1 = time.time()
        jobs = [(s, f, rep) for s, f in failing for rep in range(args.rollouts)] + [(s, f, 0) for s, f in solved]
        res = run(cfg, jobs, f"σ {sigma} k {k} ρ {rho} τ {tau}")
        on_fail, on_solved = res[: len(failing) * args.rollouts], res[len(failing) * args.rollouts :]
        flips = sum(any(r["success"] for r in on_fail[i * args.rollouts : (i + 1) * args.rollouts])
                    for i in range(len(failing)))
        by_family = {}
        for i, (s, f) in enumerate(failing):
            ok = any(r["success"] for r in on_fail[i * args.rollouts : (i + 1) * args.rollouts])
            n_f, k_f = by_family.get(f, (0, 0))
            by_family[f] = (n_f + 1, k_f + int(ok))
        kept = sum(r["success"] for r in on_solved)
        keep_by_family = {}
        for r in on_solved:
            n_f, k_f = keep_by_family.get(r["family"], (0, 0))
            keep_by_family[r["family"]] = (n_f + 1, k_f + int(r["success"]))
        row = {"sigma": sigma, "k": k, "rho": rho, "gripper_temperature": tau, "failing": len(failing), "flips": flips,
               "flip_rate": flips / max(1, len(failing)), "flip_ci95": wilson(flips, len(failing)),
               "explored_success_on_failing": sum(r["success"] for r in on_fail) / max(1, len(on_fail)),
               "keep_rate": kept / max(1, len(on_solved)), "keep_ci95": wilson(kept, len(on_solved)),
               "flips_by_family": {f: {"failing": n, "flips": c} for f, (n, c) in sorted(by_family.items())},
               "keep_by_family": {f: {"solved": n, "kept": c} for f, (n, c) in sorted(keep_by_family.items())},
               "seconds": time.time() - t1, "episodes": len(jobs)}
        rows.append(row)
        print(f"σ {sigma:<5} k {k:<2} ρ {rho:<4} τ {tau:<5}  flip {flips:>3}/{len(failing):<3} = {row['flip_rate']:5.1%} "
              f"[{row['flip_ci95'][0]:.0%}, {row['flip_ci95'][1]:.0%}]  explored success on failing "
              f"{row['explored_success_on_failing']:5.1%}  keep {kept}/{len(on_solved)} = {row['keep_rate']:5.1%}  "
              f"flips by family {', '.join(f'{f} {c}/{n}' for f, (n, c) in sorted(by_family.items()))}; "
              f"kept {', '.join(f'{f} {c}/{n}' for f, (n, c) in sorted(keep_by_family.items()))}  "
              f"[{row['seconds']:.0f} s]", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": args.checkpoint, "scenes": scenes, "rollouts": args.rollouts,
                               "mean_outcomes": mean, "settings": rows, "seconds": time.time() - t0}, indent=1))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} ({time.time() - t0:.0f} s)")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"σ {r['sigma']}\nk {r['k']} ρ {r['rho']}\nτ {r['gripper_temperature']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 3.6))
    for key, ci, name, off in (("flip_rate", "flip_ci95", "flip rate (failing scenes)", -0.18),
                               ("keep_rate", "keep_ci95", "keep rate (solved scenes)", 0.18)):
        v = [r[key] for r in rows]
        err = [[r[key] - r[ci][0] for r in rows], [r[ci][1] - r[key] for r in rows]]
        ax.bar([i + off for i in x], v, width=0.34, yerr=err, capsize=3, label=name)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("exploration: flip rate vs keep rate (95% Wilson intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
