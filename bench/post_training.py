"""Post-training efficacy: does one offline update on explored episodes raise the mean policy's
success? Every objective on the same data, every result paired against the initial checkpoint.

    .venv/bin/python bench/post_training.py [--init models/vla_bc_v4] [--episodes 500]
        [--seed-repeat 5] [--setting 0.03:4:0.9] [--objectives ratio awr filtered]
        [--training-seeds 0 1 2] [--per-family 200] [--out out/post_training]

Per training seed s: ``--episodes`` explored rollouts of ``--init`` (``collect --direct
--checkpoint``; ``--seed-repeat`` rollouts per scene; scenes from 200000 + 10000 s, exploration
seed s; the setting σ:k:ρ as in ``bench/flip_rate.py``), then one ``train-rl`` per objective on
that same dataset (``--objectives``: the likelihood-ratio update ``ratio``, advantage-weighted
regression ``awr``, success-filtered imitation ``filtered``), then ``vla-rl-ros compare init
candidate`` on the held-out seed bank (``--per-family`` scenes per family; the initial
checkpoint's episodes come from the evaluation cache after the first time).

Prints per objective and family the paired difference over the training seeds with the two-level
stratified bootstrap interval (``core/stats.aggregate_over_runs``), each run's McNemar p, the
update's step (mean |Δμ| in σ units) and the real-episode budget. Writes ``--out``/results.json.
A dataset or a checkpoint already in ``--out`` is reused (rerun to add seeds or objectives).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.flip_rate import parse_setting  # noqa: E402

#: first collection seed of training seed s: COLLECT_SEED + COLLECT_STRIDE * s (disjoint scenes per run)
COLLECT_SEED, COLLECT_STRIDE = 200000, 10000


def collect(args, seed: int, data: Path, setting) -> dict:
    from vla_rl_ros.core.collect import DirectCollectConfig, collect_direct
    from vla_rl_ros.core.data.store import read_info
    from vla_rl_ros.core.policy.checkpoint import read_config

    info = read_info(data) if data.exists() else None
    if info is not None and int(info["total_episodes"]) == args.episodes:
        return {"reused": True, "episodes": args.episodes}
    if data.exists():
        raise SystemExit(f"{data} holds {info and info['total_episodes']} episodes, not {args.episodes}: remove it")
    sigma, k, rho, tau = setting
    init = str(Path(args.init).resolve())
    cfg = DirectCollectConfig(seed=COLLECT_SEED + COLLECT_STRIDE * seed, seed_repeat=args.seed_repeat,
                              image_size=int(read_config(init)["policy"]["image_size"]), policy=init,
                              sigma=(sigma,), replan_every=k, rho=rho, gripper_temperature=tau, explore_seed=seed, max_steps=args.max_steps)
    from tqdm import tqdm

    bar = tqdm(total=args.episodes, unit="ep", desc=f"seed {seed}: collect", dynamic_ncols=True, leave=False)

    def progress(n, ok):
        bar.n = n
        bar.set_postfix(success=f"{ok}/{n}")
        bar.refresh()

    try:
        return collect_direct(str(data), args.episodes, cfg, workers=args.workers, progress=progress)
    finally:
        bar.close()


def train(args, seed: int, data: Path, objective: str, out: Path) -> dict:
    from vla_rl_ros.core.rl.config import RLConfig
    from vla_rl_ros.core.rl.trainer import train_rl
    from vla_rl_ros.core.sim.task_features import episode_privileged_features

    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = RLConfig(data=(str(data),), init=str(Path(args.init).resolve()), out=str(out), objective=objective,
                   epochs=args.epochs, lr=args.lr, kl_coef=args.kl_coef, seed=seed, threads=args.threads,
                   drop_agreeing_groups=args.drop_agreeing_groups, target_kl=args.target_kl)
    res = train_rl(cfg, privileged=episode_privileged_features)
    keep = {k: res[k] for k in ("checkpoint", "version", "decisions", "episodes", "episode_success_rate",
                                "mu_shift_sigma", "train_seconds", "stopped_early", "weights", "baseline")}
    keep["epochs_run"] = len(res["history"])
    keep["kl_behaviour"] = res["history"][-1]["kl_behaviour"] if res["history"] else None
    done.write_text(json.dumps(keep, indent=1))
    return keep


def compare(args, candidate: str, out: Path) -> dict:
    from vla_rl_ros.cli import main as cli

    path = out / f"compare_k{args.eval_replan_every}_pf{args.per_family}.json"
    if not path.is_file():
        rc = cli(["compare", str(Path(args.init).resolve()), candidate, "--per-family", str(args.per_family),
                  "--workers", str(args.workers), "--max-steps", str(args.max_steps), "--json", str(path),
                  "--replan-every", str(args.eval_replan_every),
                  "--cache", args.cache])
        if rc != 0:
            raise SystemExit(f"compare failed ({rc})")
    return json.loads(path.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", default="models/vla_bc_v4")
    ap.add_argument("--episodes", type=int, default=500, help="real explored episodes per training seed")
    ap.add_argument("--seed-repeat", type=int, default=5)
    ap.add_argument("--setting", default="0.03:4:0.9", help="exploration σ:k:ρ")
    ap.add_argument("--objectives", nargs="+", default=["ratio", "awr", "filtered"])
    ap.add_argument("--training-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--per-family", type=int, default=200, help="held-out bank scenes per family")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--kl-coef", type=float, default=0.05)
    ap.add_argument("--target-kl", type=float, default=0.5)
    ap.add_argument("--drop-agreeing-groups", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=120)
    ap.add_argument("--cache", default="runs/eval_cache")
    ap.add_argument("--eval-replan-every", type=int, default=1, help="the evaluated (deployed) policy plans every k ticks")
    ap.add_argument("--out", default="out/post_training")
    args = ap.parse_args()
    setting = parse_setting(args.setting)

    from vla_rl_ros.core import stats

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    runs: dict = {o: [] for o in args.objectives}
    for seed in args.training_seeds:
        data = root / f"data_s{seed}"
        t1 = time.time()
        col = collect(args, seed, data, setting)
        how = "reused" if col.get("reused") else f"{time.time() - t1:.0f} s, success {col['success']}/{args.episodes}"
        print(f"seed {seed}: {args.episodes} explored episodes ({args.setting}) in {data} [{how}]", flush=True)
        for objective in args.objectives:
            out = root / f"{objective}_s{seed}"
            res = train(args, seed, data, objective, out)
            cmp = compare(args, res["checkpoint"], out)
            o = cmp["table"]["overall"]
            print(f"  {objective:<9} v{res['version']}: {100 * o['a_rate']:.1f}% -> {100 * o['b_rate']:.1f}% "
                  f"({100 * o['diff']:+.1f} [{100 * o['ci'][0]:+.1f}, {100 * o['ci'][1]:+.1f}], McNemar p {o['p']:.3g}); "
                  f"step {res['mu_shift_sigma']:.3f} σ, {res['epochs_run']} epochs, {res['decisions']} decisions",
                  flush=True)
            runs[objective].append({"seed": seed, "train": res, "table": cmp["table"],
                                    "a": [e["success"] for e in cmp["A"]["episodes"]],
                                    "b": [e["success"] for e in cmp["B"]["episodes"]],
                                    "families": [e["family"] for e in cmp["A"]["episodes"]]})
    summary = {}
    print(f"\ninit {args.init}; {args.episodes} real explored episodes per run ({args.setting}, "
          f"{args.seed_repeat} per scene); held-out bank {args.per_family} per family; "
          f"{len(args.training_seeds)} training seeds")
    print(f"{'objective':<10}{'family':<9}{'before':>8}{'after':>8}{'diff (pts)':>12}  {'95% CI over seeds':<20}per-run p")
    for objective, rs in runs.items():
        fams = sorted(set(rs[0]["families"]))
        summary[objective] = {}
        for fam in fams + ["overall"]:
            sel = [[i for i, f in enumerate(r["families"]) if fam in ("overall", f)] for r in rs]
            agg = stats.aggregate_over_runs([([r["a"][i] for i in s], [r["b"][i] for i in s],
                                              [r["families"][i] for i in s]) for r, s in zip(rs, sel)])
            before = sum(sum(r["a"][i] for i in s) / len(s) for r, s in zip(rs, sel)) / len(rs)
            after = sum(sum(r["b"][i] for i in s) / len(s) for r, s in zip(rs, sel)) / len(rs)
            ps = [r["table"][fam]["p"] for r in rs]
            summary[objective][fam] = {**agg, "before": before, "after": after, "p_per_run": ps}
            print(f"{objective:<10}{fam:<9}{100 * before:>7.1f}%{100 * after:>7.1f}%{100 * agg['diff']:>+11.1f}  "
                  f"[{100 * agg['ci'][0]:+.1f}, {100 * agg['ci'][1]:+.1f}]".ljust(20 + 46) + " ".join(f"{p:.3g}" for p in ps))
    (root / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary,
                                                   "seconds": time.time() - t0}, indent=1))
    print(f"wrote {root / 'results.json'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
