"""Does the world model save real episodes? Success gain against real explored episodes, with and
without the world model, paired on the held-out seed bank, over several training seeds.

    .venv/bin/python bench/wm_gain.py [--init models/vla_bc_v4] [--setting 0.01:4:0.9]
        [--without 300] [--with 150 300] [--training-seeds 0 1 2] [--per-family 167]
        [--out out/wm_gain]

Per training seed s: max(budgets) explored rollouts of ``--init`` (the collection of
``bench/post_training.py``: scenes from 200000 + 10000 s, exploration seed s, ``--seed-repeat``
rollouts per scene; a dataset already in ``--out`` is reused). For each budget b the first b
episodes (whole scene groups) are the only real data of the update:

- **without**: ``train-rl`` (the likelihood-ratio update, Monte-Carlo advantages, leave-one-out
  baseline) on episodes 0:b;
- **with**: ``train-wm`` on the same episodes 0:b (the default latent ensemble, no privileged
  features), then the same ``train-rl`` whose advantages come from the model
  (``--advantage world_model``: Q of the executed chunk minus the mean Q of K candidates).

Only the advantage source differs between the two arms. Every result is paired against ``--init``
on the bank (``vla-rl-ros compare``; ``--per-family`` scenes per family; ``--init``'s episodes
come from the evaluation cache after the first time). Printed: per arm and budget the mean gain
over training seeds with the two-level stratified bootstrap interval
(``core/stats.aggregate_over_runs``) and each run's McNemar p; the issue's target (the gain of
*without* at 2b reached by *with* at b). Written: ``OUT/results.json`` and ``OUT/wm_gain.png``
(gain against real episodes, one line per arm). Runs already in ``--out`` are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.flip_rate import parse_setting  # noqa: E402
from bench.post_training import collect, compare  # noqa: E402  (one collection and one comparison protocol)

ARMS = ("without", "with")


def train_arm(args, seed: int, data: Path, arm: str, budget: int, out: Path) -> dict:
    """One update on episodes 0:budget; the world model (arm ``with``) is fitted on the same episodes."""
    from vla_rl_ros.core.rl.config import RLConfig
    from vla_rl_ros.core.rl.trainer import train_rl
    from vla_rl_ros.core.sim.task_features import episode_contact, episode_privileged_features
    from vla_rl_ros.core.wm.config import WMConfig
    from vla_rl_ros.core.wm.train import train_world_model

    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    init = str(Path(args.init).resolve())
    ids = f"0:{budget}"
    wm_fields, wm_meta = {}, None
    if arm == "with":
        wcfg = WMConfig(data=(str(data),), checkpoint=init, out=str(out / "wm"), episode_ids=ids,
                        chunk=args.setting[1], seed=seed, threads=args.threads)
        wm_meta = train_world_model(wcfg, contact=episode_contact)
        wm_fields = dict(advantage="world_model", world_model=wm_meta["model"], wm_candidates=args.wm_candidates)
    cfg = RLConfig(data=(str(data),), episode_ids=ids, init=init, out=str(out), objective="ratio",
                   epochs=args.epochs, lr=args.lr, kl_coef=args.kl_coef, target_kl=args.target_kl, seed=seed,
                   threads=args.threads, **wm_fields)
    res = train_rl(cfg, privileged=episode_privileged_features)
    keep = {k: res[k] for k in ("checkpoint", "version", "decisions", "episodes", "episode_success_rate",
                                "mu_shift_sigma", "train_seconds", "stopped_early")}
    keep["epochs_run"] = len(res["history"])
    if wm_meta is not None:
        h = wm_meta["held_out"]
        keep["wm"] = {"train_episodes": wm_meta["train_episodes"], "train_seconds": wm_meta["train_seconds"],
                      "ratio_to_copy": {k: v.get("ratio") for k, v in h.get("horizons", {}).items()},
                      "success_auc": h.get("success_auc"), "spearman": h.get("disagreement_error_spearman")}
    done.write_text(json.dumps(keep, indent=1))
    return keep


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for arm, color in zip(ARMS, ("C0", "C3")):
        rows = sorted((int(b), s["overall"]) for b, s in summary.get(arm, {}).items())
        if not rows:
            continue
        x = np.array([b for b, _ in rows]) * (1.0 if arm == "without" else 1.02)  # side by side
        y = np.array([100 * s["diff"] for _, s in rows])
        lo = y - np.array([100 * s["ci"][0] for _, s in rows])
        hi = np.array([100 * s["ci"][1] for _, s in rows]) - y
        ax.errorbar(x, y, yerr=[lo, hi], fmt="o-", color=color, capsize=4, lw=2,
                    label=f"{arm} the world model (mean over seeds, 95% CI)")
        for b, s in rows:
            ax.scatter([b * (1.0 if arm == "without" else 1.02)] * len(s["per_run"]),
                       [100 * d for d in s["per_run"]], color=color, s=10, alpha=0.5, zorder=3)
    ax.axhline(0, color="grey", ls="--", lw=1)
    ax.set_xlabel("real explored episodes in the update")
    ax.set_ylabel("success gain over the initial policy (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", default="models/vla_bc_v4")
    ap.add_argument("--setting", default="0.01:4:0.9", help="exploration σ:k:ρ (k is also the model's chunk)")
    ap.add_argument("--without", nargs="+", type=int, default=[300], help="real-episode budgets of the plain update")
    ap.add_argument("--with", dest="with_", nargs="+", type=int, default=[150, 300],
                    help="real-episode budgets of the update with the world model")
    ap.add_argument("--seed-repeat", type=int, default=5)
    ap.add_argument("--training-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--per-family", type=int, default=167, help="held-out bank scenes per family (3 x 167 = 501)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--kl-coef", type=float, default=0.05)
    ap.add_argument("--target-kl", type=float, default=0.5)
    ap.add_argument("--wm-candidates", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=120)
    ap.add_argument("--cache", default="runs/eval_cache")
    ap.add_argument("--out", default="out/wm_gain")
    args = ap.parse_args()
    args.setting = parse_setting(args.setting)
    args.eval_replan_every = 1  # compare(): the deployed policy plans every tick
    budgets = {"without": sorted(set(args.without)), "with": sorted(set(args.with_))}
    args.episodes = max(budgets["without"] + budgets["with"])  # collect(): episodes per training seed
    bad = [b for bs in budgets.values() for b in bs if b % args.seed_repeat or b <= 0]
    if bad:
        raise SystemExit(f"budgets {bad}: each must be a positive multiple of --seed-repeat {args.seed_repeat} "
                         "(whole scene groups)")

    from vla_rl_ros.core import stats

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    runs: dict = {arm: {b: [] for b in bs} for arm, bs in budgets.items()}
    for seed in args.training_seeds:
        data = root / f"data_s{seed}"
        t1 = time.time()
        col = collect(args, seed, data, args.setting)
        how = "reused" if col.get("reused") else f"{time.time() - t1:.0f} s, success {col['success']}/{args.episodes}"
        print(f"seed {seed}: {args.episodes} explored episodes in {data} [{how}]", flush=True)
        for arm, bs in budgets.items():
            for b in bs:
                out = root / f"{arm}_n{b}_s{seed}"
                res = train_arm(args, seed, data, arm, b, out)
                cmp = compare(args, res["checkpoint"], out)
                o = cmp["table"]["overall"]
                wm = res.get("wm")
                print(f"  {arm:<8} {b:>4} episodes: {100 * o['a_rate']:.1f}% -> {100 * o['b_rate']:.1f}% "
                      f"({100 * o['diff']:+.1f} [{100 * o['ci'][0]:+.1f}, {100 * o['ci'][1]:+.1f}], McNemar p "
                      f"{o['p']:.3g}); step {res['mu_shift_sigma']:.3f} σ"
                      + (f"; model/copy {wm['ratio_to_copy']}" if wm else ""), flush=True)
                runs[arm][b].append({"seed": seed, "train": res, "table": cmp["table"],
                                     "a": [e["success"] for e in cmp["A"]["episodes"]],
                                     "b": [e["success"] for e in cmp["B"]["episodes"]],
                                     "families": [e["family"] for e in cmp["A"]["episodes"]]})
    summary: dict = {}
    n_scenes = 3 * args.per_family
    print(f"\ninit {args.init}; exploration σ:k:ρ {':'.join(str(v) for v in args.setting[:3])}; bank {n_scenes} "
          f"scenes; {len(args.training_seeds)} training seeds")
    print(f"{'arm':<9}{'episodes':>9}  {'family':<9}{'before':>8}{'after':>8}{'gain':>8}  {'95% CI over seeds':<18}"
          "per-run p")
    for arm, by_b in runs.items():
        summary[arm] = {}
        for b, rs in by_b.items():
            fams = sorted(set(rs[0]["families"]))
            summary[arm][b] = {}
            for fam in fams + ["overall"]:
                sel = [[i for i, f in enumerate(r["families"]) if fam in ("overall", f)] for r in rs]
                agg = stats.aggregate_over_runs([([r["a"][i] for i in s], [r["b"][i] for i in s],
                                                  [r["families"][i] for i in s]) for r, s in zip(rs, sel)])
                before = float(np.mean([np.mean([r["a"][i] for i in s]) for r, s in zip(rs, sel)]))
                after = float(np.mean([np.mean([r["b"][i] for i in s]) for r, s in zip(rs, sel)]))
                ps = [r["table"][fam]["p"] for r in rs]
                summary[arm][b][fam] = {**agg, "before": before, "after": after, "p_per_run": ps}
                print(f"{arm:<9}{b:>9}  {fam:<9}{100 * before:>7.1f}%{100 * after:>7.1f}%{100 * agg['diff']:>+7.1f}  "
                      f"[{100 * agg['ci'][0]:+.1f}, {100 * agg['ci'][1]:+.1f}]".ljust(18 + 45)
                      + " ".join(f"{p:.3g}" for p in ps))
    for b in budgets["with"]:
        if 2 * b in summary["without"]:
            w, wo = summary["with"][b]["overall"], summary["without"][2 * b]["overall"]
            print(f"target (the same gain from half the real episodes): with the model at {b} episodes "
                  f"{100 * w['diff']:+.1f} [{100 * w['ci'][0]:+.1f}, {100 * w['ci'][1]:+.1f}] against without at "
                  f"{2 * b} {100 * wo['diff']:+.1f} [{100 * wo['ci'][0]:+.1f}, {100 * wo['ci'][1]:+.1f}] points")
    (root / "results.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "runs": runs,
                                                   "summary": summary, "seconds": time.time() - t0}, indent=1,
                                                  default=str))
    plot(summary, root / "wm_gain.png", f"{Path(args.init).name}: gain vs real episodes, {n_scenes} paired scenes, "
                                        f"{len(args.training_seeds)} training seeds")
    print(f"wrote {root / 'results.json'} and {root / 'wm_gain.png'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
