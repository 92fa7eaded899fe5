"""Aggregate several `vla-rl-ros improve` runs (one per training seed): mean and spread per round.

    .venv/bin/python bench/improve_seeds.py runs/improve_v3_s0 runs/improve_v3_s1 [...] [--plot docs/x.png]

Reads each run's ``rounds.json``; prints the noiseless success per round and family for every
seed, then mean ± sample std over seeds and the gain over round 0, and writes a plot (every seed
thin, the mean thick).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vla_rl_ros.core.improve import finish_rounds_plot  # noqa: E402

FAMILIES = ("pick", "push", "place", "overall")


def rate(ev: dict, fam: str) -> float:
    k, n = ev.get(fam, (0, 0))
    return 100.0 * k / n if n else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--plot", default="")
    args = ap.parse_args()
    runs = {}
    for r in args.runs:
        f = Path(r) / "rounds.json"
        if not f.is_file():
            print(f"error: {f} not found (is {r} an improve --out directory?)", file=sys.stderr)
            return 2
        runs[r] = json.loads(f.read_text())
    n_rounds = min(len(v) for v in runs.values())
    if any(len(v) != n_rounds for v in runs.values()):
        print(f"note: runs have different numbers of rounds; using the first {n_rounds}")
    succ = np.array([[[rate(rows[i]["eval"], f) for f in FAMILIES] for i in range(n_rounds)]
                     for rows in runs.values()])  # (seeds, rounds, families)
    print(f"{'run':<28}" + "".join(f"{'round ' + str(i):>12}" for i in range(n_rounds)))
    for (name, rows), s in zip(runs.items(), succ):
        print(f"{Path(name).name:<28}" + "".join(f"{s[i, -1]:>11.1f}%" for i in range(n_rounds)))
    print()
    n = len(runs)
    for j, f in enumerate(FAMILIES):
        m, sd = succ[:, :, j].mean(0), (succ[:, :, j].std(0, ddof=1) if n > 1 else np.zeros(n_rounds))
        cells = "".join(f"{m[i]:>7.1f}±{sd[i]:<4.1f}" for i in range(n_rounds))
        print(f"{'mean±sd ' + f:<28}{cells}")
    gain = succ[:, -1, -1] - succ[:, 0, -1]
    eps = [rows[n_rounds - 1].get("collected_total", 0) for rows in runs.values()]
    print(f"\noverall gain after round {n_rounds - 1}: {gain.mean():+.1f} points (sd {gain.std(ddof=1) if n > 1 else 0:.1f}, "
          f"per seed {', '.join(f'{g:+.1f}' for g in gain)}) over {n} seed(s), {max(eps)} explored episodes per seed")
    fails = [rows[n_rounds - 1].get("failures") for rows in runs.values()]
    if all(f is not None for f in fails):  # improve runs that sorted their failures by class
        classes = sorted({c for f in fails for c in f}, key=lambda c: -sum(f.get(c, 0) for f in fails))
        base = runs[next(iter(runs))][0].get("failures") or {}
        print(f"failures after round {n_rounds - 1} (mean over seeds; before RL): "
              + ", ".join(f"{c} {np.mean([f.get(c, 0) for f in fails]):.1f} ({base.get(c, 0)})" for c in classes))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        x = np.arange(n_rounds)
        for j, f in enumerate(FAMILIES):
            c = f"C{j}"
            for s in succ:
                ax.plot(x, s[:, j], color=c, lw=0.7, alpha=0.5)
            ax.plot(x, succ[:, :, j].mean(0), "o-", color=c, lw=2.5 if f == "overall" else 1.5, label=f)
        finish_rounds_plot(fig, ax, x, "round (0 = behaviour cloning, before RL)",
                           f"improve over {n} training seed(s): thin = each seed, thick = mean", args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
