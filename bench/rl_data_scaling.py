"""Does the RL update's gain grow with the number of explored episodes?

    .venv/bin/python bench/rl_data_scaling.py --data runs/scale_data --init models/vla_bc_v3 \
        --out runs/scale --sizes 250,500,1000 [--eval-episodes 100] [train-rl options]

One dataset of explored rollouts of ``--init`` (``collect --direct --policy … --sigma … --seed-repeat
5``: consecutive episodes of a scene form a group) is cut into *disjoint* blocks of each size
(episodes 0:250, 250:500, …), so blocks of one size are independent repetitions on different scenes
and noise, and the blocks of all sizes come from the same behaviour policy. Each block trains one
``train-rl`` update from ``--init`` (training seed = block index); every result is evaluated
noiselessly on the held-out seeds (the same evaluation, cache included, as ``improve``). Printed: per
block the success and its gain over ``--init``; per size the mean ± sample sd of the gain; a plot of
success against episodes. If the gain rises with the size, the update works and the number of
episodes limits it; if it does not, more episodes of this kind will not help. A block whose
``OUT/n<size>_b<block>/result.json`` exists is not trained again (resume after an interruption).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vla_rl_ros.core.data.store import read_info  # noqa: E402
from vla_rl_ros.core.rl.config import RLConfig  # noqa: E402
from vla_rl_ros.core.rl.trainer import train_rl  # noqa: E402
from vla_rl_ros.core.improve import ImproveConfig, evaluate_cached  # noqa: E402
from vla_rl_ros.core.sim.task_features import episode_privileged_features  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from improve_seeds import FAMILIES, rate as pct  # noqa: E402  (success % of one family in an eval table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="one LeRobot dataset of explored rollouts of --init")
    ap.add_argument("--init", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="250,500,1000", help="block sizes in episodes (multiples of the group size)")
    ap.add_argument("--max-blocks", type=int, default=4, help="at most this many blocks per size")
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--eval-seed", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--clip", type=float, default=0.2)
    ap.add_argument("--tag", default="", help="suffix of the per-block run folders (several settings in one --out)")
    ap.add_argument("--advantage", choices=("mc", "gae"), default="mc")
    ap.add_argument("--gae-lambda", type=float, default=0.9)
    ap.add_argument("--ratio", choices=("chunk", "dim"), default="chunk")
    ap.add_argument("--plot", default="", help="PNG (default: OUT/scaling.png)")
    args = ap.parse_args()
    info = read_info(Path(args.data))
    if info is None:
        print(f"error: no LeRobot dataset at {args.data}", file=sys.stderr)
        return 2
    total = int(info["total_episodes"])
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        print(f"error: --sizes must be comma-separated integers, got {args.sizes!r}", file=sys.stderr)
        return 2
    if not sizes or sizes[0] < 1 or sizes[-1] > total:
        print(f"error: sizes {sizes} must be in 1..{total} (episodes in {args.data})", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ev_args = ImproveConfig(eval_seed=args.eval_seed, eval_episodes=args.eval_episodes, max_steps=120,
                            workers=args.workers)
    base, _, _ = evaluate_cached(str(Path(args.init).resolve()), ev_args)
    print(f"{args.init}: {pct(base, 'overall'):.1f}% on {args.eval_episodes} seeds from {args.eval_seed}")
    rows = []
    for size in sizes:
        for b in range(min(total // size, args.max_blocks)):
            sel = f"{b * size}:{(b + 1) * size}"
            t0 = time.monotonic()
            run = out / f"n{size}_b{b}{args.tag}"
            done = run / "result.json"  # a block trained by an earlier, interrupted run is reused
            if done.is_file():
                res = json.loads(done.read_text())
            else:
                res = train_rl(RLConfig(data=[args.data], episode_ids=sel, init=args.init, out=str(run),
                                        epochs=args.epochs, lr=args.lr, clip=args.clip, advantage=args.advantage,
                                        gae_lambda=args.gae_lambda, ratio=args.ratio, seed=b),
                               privileged=episode_privileged_features)
                done.write_text(json.dumps(res, default=str))
            ev, fails, _ = evaluate_cached(res["checkpoint"], ev_args)
            h = res["history"][-1]
            rows.append({"size": size, "block": b, "episodes": sel, "eval": ev, "failures": fails,
                         "gain": pct(ev, "overall") - pct(base, "overall"), "explored_success": res["episode_success_rate"],
                         "decisions": res["decisions"], "kl_behaviour": h["kl_behaviour"], "ess": h["ess"],
                         "clip_fraction": h["clip_fraction"], "value_loss": res["value_loss"],
                         "baseline": res["baseline"], "seconds": time.monotonic() - t0})
            r = rows[-1]
            print(f"  {size:>5} episodes, block {b} ({sel}): " + ", ".join(f"{f} {pct(ev, f):.1f}%" for f in FAMILIES)
                  + f"; gain {r['gain']:+.1f}; explored {100 * r['explored_success']:.0f}%, KL {r['kl_behaviour']:.3f}, "
                  f"ESS {r['ess']:.2f}, {r['seconds']:.0f}s", flush=True)
            (out / f"scaling{args.tag}.json").write_text(json.dumps({"init": args.init, "base": base, "rows": rows}, indent=1))
    print(f"\n{'episodes':>8} {'blocks':>6} {'success (mean ± sd)':>20} {'gain':>14}   per block")
    for size in sizes:
        g = np.array([r["gain"] for r in rows if r["size"] == size])
        s = np.array([pct(r["eval"], "overall") for r in rows if r["size"] == size])
        sd = lambda x: float(x.std(ddof=1)) if len(x) > 1 else float("nan")  # noqa: E731
        print(f"{size:>8} {len(g):>6} {s.mean():>12.1f}% ± {sd(s):4.1f} {g.mean():>+8.1f} ± {sd(g):4.1f}   "
              + ", ".join(f"{x:.0f}%" for x in s))
    plot(rows, pct(base, "overall"), args.init, Path(args.plot or out / f"scaling{args.tag}.png"))
    return 0


def plot(rows, base: float, init: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    sizes = sorted({r["size"] for r in rows})
    for f, style in zip(FAMILIES, ("C0", "C1", "C2", "k")):
        m = [np.mean([pct(r["eval"], f) for r in rows if r["size"] == s]) for s in sizes]
        ax.plot(sizes, m, "o-", color=style, lw=2.5 if f == "overall" else 1.0, label=f"{f} (mean of blocks)")
    ax.scatter([r["size"] for r in rows], [pct(r["eval"], "overall") for r in rows], color="k", s=12, alpha=0.5,
               label="overall, each block", zorder=3)
    ax.axhline(base, color="grey", ls="--", lw=1, label=f"{Path(init).name} (before RL)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("explored episodes in the update")
    ax.set_ylabel("noiseless success %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("train-rl gain vs. data (disjoint blocks of one collection)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
