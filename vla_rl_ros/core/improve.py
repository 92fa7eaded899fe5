"""``vla-rl-ros improve``: rounds of collect (with exploration) → train-rl → hot swap → evaluate.

ROS-free: the episodes come from a :class:`Collector`. :class:`DirectCollector` runs the episode
loop in worker processes (``core/collect.py``); ``vla_rl_ros.rosio.GraphCollector`` keeps one
explore graph running for the whole run (``config/graphs/explore.yaml``: sim_node + policy_node
(μ) + exploration_node (a = μ + ε, truncated Gaussian) + trajectory_logger, one LeRobot dataset
for all rounds). Per round:

1. the collector runs the round's episodes (graph: resume the simulator with sim_node's
   ``paused`` parameter, pause it once the round's last episode has started, wait until the
   logger has saved them all);
2. ``train_rl`` on everything logged so far (each frame carries its behaviour log-likelihood and
   the policy version that produced it), starting from the current version, with ONNX export;
3. ``collector.announce``: graph — the *still-running* policy node validates the new checkpoint
   off the control path and swaps it in between two inferences; direct — the next round's
   workers load it;
4. evaluate the noiseless mean on fixed evaluation seeds (direct loop in ``workers`` processes:
   the same episodes as the graph on the same seeds, see ``tests/ros/test_evaluate.py``), with
   the failures sorted by class (``evaluate --diagnose``), so a round shows *what* RL changed.

The explored episodes' own success is the noisy policy's success (on the collection seeds).
Writes ``config.json``, ``rounds.json``, ``improve.png``, the per-round figures as TensorBoard event
files (``tb/``: :func:`round_scalars`; each round's update has its own ``round_<r>/tb``; off with
``--no-tensorboard``) and prints a per-round table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vla_rl_ros.core.config import opt, require, write_config
from vla_rl_ros.core.control import ENSEMBLE_DECAY, TEMPORAL_ENSEMBLE
from vla_rl_ros.core.node_config import DEFAULT_SIGMA
from vla_rl_ros.core.parallel import ray_option
from vla_rl_ros.core.scalars import ScalarLog
from vla_rl_ros.core.sim.tasks import FAMILIES

#: RLConfig fields that improve sets itself (per round) instead of taking from the command line
RL_FIELDS_SET_BY_IMPROVE = ("data", "episode_ids", "init", "out", "seed", "threads", "version", "export_onnx",
                            "world_model")


@dataclass(frozen=True)
class ImproveConfig:
    rounds: int = opt(2, "rounds of collect -> train-rl -> hot swap -> evaluate")
    episodes_per_round: int = opt(60, "explored episodes collected per round")
    init: str = opt("", "checkpoint to start from (default: the shipped one)")
    out: str = opt("runs/improve", "output folder (a fresh one per run)")
    eval_episodes: int = opt(100, "evaluation episodes per round (noiseless mean policy)")
    eval_seed: int = opt(1000, "first evaluation seed")
    collect_seed: int = opt(200000, "first collection seed (disjoint from the evaluation seeds)")
    sigma: tuple[float, ...] = opt((DEFAULT_SIGMA,), "exploration σ of the arm joints (rad): one value or one per joint")
    gripper_sigma: float = opt(0.0, "exploration σ of the gripper (m); 0: not explored, the gripper executes μ")
    seed_repeat: int = opt(5, "rollouts per scene (seed) in a row, each with its own noise: train-rl's group "
                              "baseline is the leave-one-out mean of the scene's other rollouts", aliases=("--group-size",))
    replan_every: int = opt(1, "collection: plan every k ticks and run the chunk's first k tokens open loop "
                               "(the decision unit of the RL update); 1 replans every tick")
    rho: float = opt(0.0, "collection: correlation of the exploration noise of consecutive tokens of a chunk "
                          "(AR(1), [0, 1)); 0: white noise per token")
    gripper_temperature: float = opt(0.0, "collection: explore the gripper as a discrete close/open choice with this "
                                          "temperature (m); 0: the gripper executes μ")
    seed: int = opt(0, "training seed (exploration noise; round r's RL update uses seed + 1000 r)")
    rl_threads: int = opt(2, "torch threads of each RL update")
    real_time_factor: float = opt(3.0, "real-time factor of the simulated collection (graph)", aliases=("--speed",))
    workers: int = opt(2, "processes for evaluation (and direct collection); Ray actors with --ray")
    ray: str | None = ray_option()
    direct: bool = opt(False, "collect without ROS (same loop and frames, parallel); the new weights are then "
                              "loaded between rounds by the worker processes, not hot swapped into a policy_node")
    max_steps: int = opt(120, "episode length limit (collection and evaluation)")
    stall_timeout: float = opt(180.0, "graph: give up when no episode ended for this long (s)")
    domain_id: int | None = opt(None, "ROS_DOMAIN_ID for the graph (default: the environment's)")
    world_model: bool = opt(False, "before each round's update, refit the world model (train-wm) on all real episodes "
                                   "so far and score the update's candidates in it (needs --advantage world_model or "
                                   "--objective best_of_k)")
    wm_steps: int = opt(3000, "--world-model: optimiser steps of each round's world-model fit")

    def validate(self) -> None:
        require(self.rounds >= 1, "rounds must be >= 1")
        require(self.episodes_per_round >= 1, "episodes_per_round must be >= 1")
        require(self.seed_repeat >= 1 and self.episodes_per_round % self.seed_repeat == 0,
                f"seed_repeat must be >= 1 and divide episodes_per_round ({self.episodes_per_round})")
        require(self.eval_episodes >= 1, "eval_episodes must be >= 1")
        require(self.workers >= 1, "workers must be >= 1")
        require(self.max_steps >= 1, "max_steps must be >= 1")
        require(self.real_time_factor > 0, "real_time_factor must be > 0")
        require(all(s >= 0 for s in self.sigma) and self.gripper_sigma >= 0, "sigma and gripper_sigma must be >= 0")
        require(self.replan_every >= 1, "replan_every must be >= 1")
        require(0.0 <= self.rho < 1.0, f"rho must be in [0, 1), got {self.rho}")
        require(self.direct or (self.replan_every == 1 and self.rho == 0.0 and self.gripper_temperature == 0.0),
                "replan_every > 1, rho > 0 and gripper_temperature > 0 are direct collection only (--direct): the explore graph's "
                "exploration_node perturbs each chunk with white noise and the policy node replans every tick")

    @property
    def scenes_per_round(self) -> int:
        return self.episodes_per_round // self.seed_repeat


class Collector(Protocol):
    """Where a round's explored episodes come from (direct workers or the explore graph)."""

    def collect(self, round_index: int, checkpoint: str, progress) -> list[dict]:
        """Collect round ``round_index`` (0-based) into the run's dataset with ``checkpoint``;
        ``progress(n)`` after each episode; returns the round's episodes (``success`` each)."""

    def announce(self, checkpoint: str) -> dict | None:
        """Make ``checkpoint`` the policy of the next round; the swap event, if any."""

    def close(self) -> None: ...


class DirectCollector:
    """Explored rollouts in worker processes (``core/collect.collect_direct``), no ROS."""

    def __init__(self, cfg: ImproveConfig, data: Path, image_size: int):
        self.cfg, self.data, self.image_size = cfg, data, image_size

    def collect(self, round_index: int, checkpoint: str, progress) -> list[dict]:
        from vla_rl_ros.core.collect import DirectCollectConfig, collect_direct

        c = self.cfg
        dc = DirectCollectConfig(seed=c.collect_seed + round_index * c.scenes_per_round, seed_repeat=c.seed_repeat,
                                 image_size=self.image_size, policy=checkpoint, sigma=tuple(c.sigma),
                                 gripper_sigma=c.gripper_sigma, explore_seed=c.seed, max_steps=c.max_steps,
                                 replan_every=c.replan_every, rho=c.rho,
                                 gripper_temperature=c.gripper_temperature)
        res = collect_direct(str(self.data), c.episodes_per_round, dc, workers=c.workers,
                             progress=lambda n, ok: progress(n), ray_address=c.ray)
        k, n = res["success"], res["episodes"]
        return [{"success": i < k} for i in range(n)]

    def announce(self, checkpoint: str) -> None:
        return None  # the next round's workers load it

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- evaluation
def evaluate_cached(ckpt: str, cfg: ImproveConfig) -> tuple[dict, dict, list]:
    """Noiseless success per family on the evaluation seeds, the failures by class
    (``evaluate --diagnose``) and the per-episode outcomes ``[(seed, family, success)]`` (for the
    paired comparison of rounds), cached by the weights' hash."""
    from tqdm import tqdm

    from vla_rl_ros.core.policy.evaluate import evaluate_parallel, success_by_family

    seeds = list(range(cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes))
    # evaluation is deterministic given the weights and the seeds: cache it by the weights' hash
    # (the baseline is then evaluated once for all training seeds of an experiment)
    manifest = json.loads((Path(ckpt) / "manifest.json").read_text())["files"]
    key = "|".join([manifest["model.safetensors"]["sha256"], str(seeds[0]), str(len(seeds)), str(cfg.max_steps),
                    "diagnose", "episodes", f"ensemble {ENSEMBLE_DECAY if TEMPORAL_ENSEMBLE else None}"])
    cache = Path.home() / ".cache" / "vla_rl_ros" / "eval"
    cache.mkdir(parents=True, exist_ok=True)
    hit = cache / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
    if hit.is_file():
        got = json.loads(hit.read_text())
        return got["success"], got["failures"], [tuple(e) for e in got["episodes"]]
    bar = tqdm(total=len(seeds), unit="ep", desc="  evaluate (mean)", leave=False, dynamic_ncols=True)

    def prog(res, dt):
        bar.n = len(res)
        bar.set_postfix(success=f"{sum(r.success for r in res)}/{len(res)}")
        bar.refresh()

    res = evaluate_parallel(ckpt, seeds, workers=cfg.workers, max_steps=cfg.max_steps, progress=prog, diagnose=True,
                            ray_address=cfg.ray)
    bar.close()
    table = {k: list(v) for k, v in success_by_family(res).items()}
    failures: dict = {}
    for r in res:
        if r.failure:
            failures[r.failure] = failures.get(r.failure, 0) + 1
    failures = dict(sorted(failures.items(), key=lambda kv: -kv[1]))
    episodes = [(r.seed, r.family, bool(r.success)) for r in res]
    hit.write_text(json.dumps({"success": table, "failures": failures, "episodes": episodes}))
    return table, failures, episodes


def paired_line(start: list, now: list, version: int, version0: int) -> tuple[str, dict]:
    """Round vs the starting checkpoint on the same evaluation seeds (``core/stats``): the paired
    difference per family and overall, bootstrap interval (stratified by family) and McNemar p."""
    from vla_rl_ros.core.stats import compare_paired

    if [e[0] for e in start] != [e[0] for e in now]:
        raise ValueError("paired comparison needs the same evaluation seeds")
    table = compare_paired([e[2] for e in start], [e[2] for e in now], [e[1] for e in start])
    o = table["overall"]
    fams = ", ".join(f"{f} {100 * t['diff']:+.1f}" for f, t in table.items() if f != "overall")
    return (f"  v{version} - v{version0} on the same {o['n']} seeds: {100 * o['diff']:+.1f} points "
            f"[{100 * o['ci'][0]:+.1f}, {100 * o['ci'][1]:+.1f}] (95% paired bootstrap), McNemar p {o['p']:.3g} "
            f"({fams}){'' if o['ci'][0] > 0 or o['ci'][1] < 0 else ': no measurable change'}"), table


# ----------------------------------------------------------------------------- tables and plots
def rounds_table(rows: list[dict]) -> str:
    fams = list(FAMILIES)
    head = ["round", "version", "episodes", "explored"] + [f"eval {f}" for f in fams] + ["eval overall"]
    lines = [head]
    for r in rows:
        ev = r["eval"]
        cells = [str(r["round"]), f"v{r['version']}", str(r["collected_total"]),
                 "-" if r.get("explored_success") is None else f"{100 * r['explored_success']:.1f}%"]
        for f in fams + ["overall"]:
            k, n = ev.get(f, (0, 0))
            cells.append(f"{100.0 * k / max(n, 1):.1f}% ({k}/{n})")
        lines.append(cells)
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w[i]) for i, c in enumerate(x)) for x in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def failures_line(row: dict) -> str:
    f = row.get("failures") or {}
    return f"  v{row['version']} failures on the evaluation seeds: " + (
        ", ".join(f"{k} {v}" for k, v in f.items()) or "none")


def plot_rounds(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = [r["round"] for r in rows]
    for f in list(FAMILIES) + ["overall"]:
        y = [100.0 * r["eval"].get(f, (0, 1))[0] / max(r["eval"].get(f, (0, 1))[1], 1) for r in rows]
        ax.plot(x, y, "o-", lw=2.5 if f == "overall" else 1.2, label=f"mean policy: {f}")
    ex = [(r["round"], 100 * r["explored_success"]) for r in rows if r.get("explored_success") is not None]
    if ex:
        ax.plot([a for a, _ in ex], [b for _, b in ex], "k--", lw=1, label="explored (noisy) episodes")
    finish_rounds_plot(fig, ax, x, "round (0 = before RL)", "vla-rl-ros improve", path)


def finish_rounds_plot(fig, ax, rounds, xlabel: str, title: str, path) -> None:
    """Shared axes of the per-round success plots (improve.png, bench/improve_seeds.py): save, close."""
    import matplotlib.pyplot as plt

    ax.set_xticks(rounds)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("noiseless success %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- the loop
def rl_summary(res: dict) -> str:
    h = res["history"][-1] if res["history"] else {}
    return (f"checkpoint v{res['version']}: {res['checkpoint']}\n"
            f"{res['decisions']} decisions from {res['episodes']} episodes (success {res['episode_success_rate']:.0%}); "
            f"{len(res['history'])} epochs{' (stopped early: KL to behaviour)' if res['stopped_early'] else ''}; "
            f"ESS {h.get('ess', float('nan')):.2f}, clip fraction {h.get('clip_fraction', float('nan')):.2f}, "
            f"KL to behaviour {h.get('kl_behaviour', float('nan')):.3f}, value loss {res['value_loss']:.3f} "
            f"(baseline: {res.get('baseline', 'value_mlp')}); "
            f"{res['train_seconds']:.0f}s; plots {Path(res['checkpoint']).parent / 'rl.png'}"
            + wm_line(res.get("world_model")))


def wm_line(info: dict | None) -> str:
    """The world model's part of the summary ('' without one)."""
    if not info:
        return ""
    head = (f"\nworld model {info['source']}: {info['candidates']} candidates per decision, branches of "
            f"{info['branch']} chunk(s); ")
    if "mu_best" in info:  # best-of-K targets
        return head + (f"candidates at {info['scale']:g} × σ, {100 * info['candidates_halted']:.1f}% halted; μ itself "
                       f"best at {100 * info['mu_best']:.1f}% of decisions; {info['decisions_imitated']} decisions "
                       f"imitate a better candidate (mean gain {info['gain_mean']:.3f}, p90 {info['gain_p90']:.3f})")
    return head + (f"halted: {100 * info['executed_halted']:.1f}% of executed chunks, "
                   f"{100 * info['candidates_halted']:.1f}% of candidates; candidate Q sd {info['candidate_q_sd']:.3f}")


def round_rl_config(rl, cfg: ImproveConfig, data: Path, ckpt: str, out: Path, r: int):
    """Round ``r``'s RL update: the command line's RL options, on everything logged so far, from
    the current checkpoint."""
    return dataclasses.replace(rl, data=(str(data),), init=ckpt, out=str(out / f"round_{r}"),
                               seed=cfg.seed + 1000 * r, threads=cfg.rl_threads).validate()


def check_world_model_options(cfg: ImproveConfig, rl) -> None:
    """``--world-model`` and the RL options that use it go together (a clear error otherwise)."""
    uses = rl.advantage == "world_model" or rl.objective == "best_of_k"
    if cfg.world_model and not uses:
        raise ValueError("--world-model needs --advantage world_model or --objective best_of_k (what the model is for)")
    if uses and not cfg.world_model:
        raise ValueError("--advantage world_model and --objective best_of_k need --world-model (refit every round)")


def refit_world_model(cfg: ImproveConfig, data: Path, ckpt: str, out: Path, r: int, tensorboard: bool = True) -> str:
    """Round ``r``'s world model: the default model refitted on every real episode so far, on the
    current checkpoint's backbone, one step per executed chunk; its held-out figures printed
    (``tensorboard``: its losses also as event files, ``round_<r>/wm/tb``)."""
    from vla_rl_ros.core.sim.task_features import episode_contact, episode_privileged_features
    from vla_rl_ros.core.wm.config import WMConfig
    from vla_rl_ros.core.wm.train import train_world_model

    wcfg = WMConfig(data=(str(data),), checkpoint=ckpt, out=str(out / f"round_{r}" / "wm"), chunk=cfg.replan_every,
                    steps=cfg.wm_steps, seed=cfg.seed + 1000 * r, threads=cfg.rl_threads, tensorboard=tensorboard)
    res = train_world_model(wcfg, contact=episode_contact, privileged=episode_privileged_features)
    print(f"  world model refitted on {res['train_episodes'] + res['held_out_episodes']} episodes "
          f"({res['train_seconds']:.0f} s)\n" + "\n".join("  " + line for line in res["summary"].splitlines()))
    return res["model"]


def run_rounds(cfg: ImproveConfig, rl, ckpt: str, version: int, out: Path, make_collector) -> list[dict]:
    """The improve loop from ``ckpt`` (version ``version``) with the :class:`Collector` that
    ``make_collector()`` returns after the baseline evaluation (closed at the end); writes
    ``rounds.json``, ``improve.png`` and the round's scalars (``tb/``, when ``rl.tensorboard``) after
    each round and returns the per-round rows. A ``RuntimeError`` from the collector ends it."""
    write_config(out / "config.json", "improve", cfg, rl)
    ev, fails, episodes = evaluate_cached(ckpt, cfg)
    rows = [{"round": 0, "version": version, "checkpoint": ckpt, "collected_total": 0,
             "explored_success": None, "eval": ev, "failures": fails, "episodes": episodes}]
    print(rounds_table(rows))
    print(failures_line(rows[0]), flush=True)
    with ScalarLog(out, enabled=rl.tensorboard) as scalars:
        scalars.add_dict("improve", round_scalars(rows[0]), 0)
        collector = make_collector()
        try:
            _rounds(cfg, rl, ckpt, out, collector, rows, scalars)
        finally:
            collector.close()
    return rows


def round_scalars(row: dict) -> dict:
    """A round's figures for the TensorBoard log (tags ``improve/<key>``, step: the round):
    ``success`` (noiseless, overall) and ``success_<family>`` as rates, ``explored_success``,
    ``paired_diff`` (success difference to round 0 on the same seeds), ``mu_shift_sigma``,
    ``version``; what a round does not have (round 0: no update) is left out."""
    vals = {("success" if f == "overall" else f"success_{f}"): k / max(n, 1) for f, (k, n) in row["eval"].items()}
    paired = (row.get("paired_vs_start") or {}).get("overall") or {}
    vals.update(explored_success=row.get("explored_success"), paired_diff=paired.get("diff"),
                mu_shift_sigma=row.get("mu_shift_sigma"), version=row["version"])
    return vals


def _rounds(cfg: ImproveConfig, rl, ckpt: str, out: Path, collector: Collector, rows: list[dict],
            scalars: ScalarLog) -> None:
    from tqdm import tqdm

    from vla_rl_ros.core.rl.trainer import train_rl
    from vla_rl_ros.core.sim.task_features import episode_privileged_features

    data = out / "data"
    for r in range(1, cfg.rounds + 1):
        t0 = time.monotonic()
        bar = tqdm(total=cfg.episodes_per_round, unit="ep", desc=f"round {r}: collect", leave=False, dynamic_ncols=True)

        def progress(n):
            bar.n = n
            bar.refresh()

        ended = collector.collect(r - 1, ckpt, progress)
        bar.close()
        explored = sum(bool(e.get("success")) for e in ended) / max(len(ended), 1)
        t_collect = time.monotonic() - t0
        rl_r = round_rl_config(rl, cfg, data, ckpt, out, r)
        if cfg.world_model:
            wm = refit_world_model(cfg, data, ckpt, out, r, tensorboard=rl.tensorboard)
            rl_r = dataclasses.replace(rl_r, world_model=wm).validate()
        res = train_rl(rl_r, privileged=episode_privileged_features)
        print(rl_summary(res))
        swap = collector.announce(res["checkpoint"])
        if swap:
            print(f"  hot swap: the running policy node validated v{res['version']} in {swap['load_ms']:.0f} ms")
        ckpt, version = res["checkpoint"], res["version"]
        ev, fails, episodes = evaluate_cached(ckpt, cfg)
        line, paired = paired_line(rows[0]["episodes"], episodes, version, rows[0]["version"])
        rows.append({"round": r, "version": version, "checkpoint": ckpt, "collected_total": r * cfg.episodes_per_round,
                     "explored_success": explored, "eval": ev, "failures": fails, "collect_seconds": t_collect,
                     "episodes": episodes, "paired_vs_start": paired, "mu_shift_sigma": res["mu_shift_sigma"],
                     "train": {k: res[k] for k in ("decisions", "train_seconds", "value_loss", "stopped_early",
                                                   "critic", "baseline", "logged_logp_gap_max",
                                                   "init_log_ratio_max")},
                     "history": res["history"], "swap": swap})
        print(rounds_table(rows))
        print(failures_line(rows[0]))
        print(failures_line(rows[-1]))
        print(line)
        print(f"  step of round {r}: mean |Δμ| = {res['mu_shift_sigma']:.3f} σ on the explored decisions", flush=True)
        (out / "rounds.json").write_text(json.dumps(rows, indent=1))
        plot_rounds(rows, out / "improve.png")
        scalars.add_dict("improve", round_scalars(rows[-1]), r)
        scalars.flush()
