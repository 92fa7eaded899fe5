"""``vla-rl-ros evaluate``: success rate of a checkpoint in the simulator, through the ROS graph
(sim_node + policy_node) or ``--direct`` (the same loop in this process or in worker processes)."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vla_rl_ros.cli.common import RosOptions, build_or_die, die, require_ray, success_table
from vla_rl_ros.core.config import add_fields, opt, require, write_config
from vla_rl_ros.core.control import DECAY_HELP, ENSEMBLE_DECAY, ENSEMBLE_HELP, TEMPORAL_ENSEMBLE
from vla_rl_ros.core.node_config import BACKENDS, RENDERERS
from vla_rl_ros.core.parallel import ray_option
from vla_rl_ros.core.paths import checkpoint_or_default

HELP = "success rate of a checkpoint in the simulator"


@dataclass(frozen=True)
class EvaluateConfig(RosOptions):
    checkpoint: str = opt("", "checkpoint directory (default: the shipped one)", aliases=("--policy",))
    episodes: int = opt(20, "episodes to run (seeds seed .. seed + episodes - 1)")
    seed: int = opt(1000, "first evaluation seed")
    family: str = opt("", "one task family (default: all, by seed)")
    backend: str = opt("auto", "inference backend", choices=BACKENDS)
    threads: int = opt(1, "inference threads")
    replan_every: int = opt(1, "infer on every n-th observation")
    temporal_ensemble: bool = opt(TEMPORAL_ENSEMBLE, ENSEMBLE_HELP)
    ensemble_decay: float = opt(ENSEMBLE_DECAY, DECAY_HELP)
    max_steps: int = opt(120, "episode length limit (control ticks)")
    real_time_factor: float = opt(2.0, "real-time factor of the simulation (graph)", aliases=("--speed",))
    direct: bool = opt(False, "evaluate without ROS (same loop, one process)")
    lockstep: bool = opt(False, "graph: each simulated tick waits for the chunk due from the policy, so the graph "
                                "runs exactly the direct loop's chunks (comparisons; not a real-time run)")
    workers: int = opt(1, "processes for --direct (episodes are independent; Ray actors with --ray)")
    ray: str | None = ray_option()
    renderer: str = opt("tiny", "PyBullet renderer", choices=RENDERERS)
    json: str = opt("", "write per-episode results here (and the resolved configuration next to it)")
    diagnose: bool = opt(False, "with --direct: say why each failed episode failed (no grasp, missed grasp by how "
                                "much, wrong cube, dropped, off pad, ...) from the simulator's state")
    diagnose_plot: str = opt("", "with --diagnose: PNG of the failure classes and grasp offsets")
    stall_timeout: float = opt(120.0, "graph: give up when no episode finished for this long (s)")

    def validate(self) -> None:
        require(self.episodes >= 1, "--episodes must be >= 1")
        require(self.direct or not (self.diagnose or self.diagnose_plot),
                "--diagnose needs --direct (it reads the simulator's state in-process)")
        require(self.workers >= 1 and self.threads >= 1, "--workers and --threads must be >= 1")
        require(self.ray is None or self.direct, "--ray needs --direct (the graph runs on one machine)")
        require(self.replan_every >= 1, "--replan-every must be >= 1")
        require(self.real_time_factor > 0, "--real-time-factor must be > 0")
        require(not (self.lockstep and self.direct), "--lockstep is for the graph; --direct is always in lock step")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))


def add_arguments(p) -> None:
    add_fields(p, EvaluateConfig)


def main(args) -> int:
    cfg = build_or_die(EvaluateConfig, args)
    require_ray(cfg.ray)
    if cfg.diagnose_plot and not cfg.diagnose:
        cfg = dataclasses.replace(cfg, diagnose=True)
    if cfg.json:
        write_config(Path(cfg.json).with_suffix(".config.json"), "evaluate", cfg)
    ckpt = checkpoint_or_default(cfg.checkpoint)
    if not cfg.direct:
        return _evaluate_ros(cfg, ckpt)
    if cfg.workers > 1 or cfg.ray is not None:
        return _evaluate_parallel(cfg, ckpt)
    return _evaluate_here(cfg, ckpt)


def _progress_bar(n: int):
    from tqdm import tqdm

    bar = tqdm(total=n, unit="ep", desc="evaluate", dynamic_ncols=True)

    def progress(res, dt):
        bar.n = len(res)
        bar.set_postfix(success=f"{sum(r.success for r in res)}/{len(res)}")
        bar.refresh()

    return bar, progress


def _runtime(cfg: EvaluateConfig, ckpt: str):
    from vla_rl_ros.core.policy.checkpoint import CheckpointError
    from vla_rl_ros.core.policy.factory import open_runtime
    from vla_rl_ros.core.robot import PANDA

    try:
        return open_runtime(ckpt, backend=cfg.backend, joint_names=PANDA.joint_names, threads=cfg.threads)
    except (CheckpointError, FileNotFoundError) as e:
        die(str(e))


def _evaluate_parallel(cfg: EvaluateConfig, ckpt: str) -> int:
    from vla_rl_ros.core.policy.evaluate import evaluate_parallel

    rt = _runtime(cfg, ckpt)
    seeds = cfg.seeds
    where = f"{cfg.workers} processes" if cfg.ray is None else f"{cfg.workers} Ray actors, {cfg.ray}"
    print(f"evaluating {rt.describe()} directly (no ROS, {where}) on seeds {seeds[0]}..{seeds[-1]}")
    bar, progress = _progress_bar(len(seeds))
    t0 = time.time()
    backend = "onnxruntime" if cfg.backend == "auto" else cfg.backend
    results = evaluate_parallel(ckpt, seeds, workers=cfg.workers, family=cfg.family or None,
                                replan_every=cfg.replan_every, backend=backend, max_steps=cfg.max_steps,
                                renderer=cfg.renderer, progress=progress, diagnose=cfg.diagnose,
                                temporal_ensemble=cfg.temporal_ensemble, ensemble_decay=cfg.ensemble_decay,
                                ray_address=cfg.ray)
    bar.close()
    _report(cfg, results, time.time() - t0)
    return 0


def _evaluate_here(cfg: EvaluateConfig, ckpt: str) -> int:
    from vla_rl_ros.core.policy.evaluate import evaluate
    from vla_rl_ros.core.policy.runtime import Observation
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    rt = _runtime(cfg, ckpt)
    seeds = cfg.seeds
    print(f"evaluating {rt.describe()} directly (no ROS) on seeds {seeds[0]}..{seeds[-1]}")
    world = PandaWorld(SimConfig(image_width=rt.cfg.image_size, image_height=rt.cfg.image_size,
                                 cameras=rt.cameras, max_steps=cfg.max_steps, renderer=cfg.renderer))
    bar, progress = _progress_bar(len(seeds))
    t0 = time.time()
    act = lambda o: rt.infer(Observation(o["images"], o["state"], o["instruction"]))  # noqa: E731
    results = evaluate(world, act, seeds, family=cfg.family or None, replan_every=cfg.replan_every,
                       progress=progress, diagnose=cfg.diagnose, temporal_ensemble=cfg.temporal_ensemble,
                       ensemble_decay=cfg.ensemble_decay)
    bar.close()
    world.close()
    _report(cfg, results, time.time() - t0)
    return 0


def _report(cfg: EvaluateConfig, results, elapsed: float) -> None:
    rows = [{"family": r.family, "success": r.success, "length": r.steps, "return": r.ret} for r in results]
    print(f"\ndirect evaluation: {len(results)} episodes in {elapsed:.0f}s")
    print(success_table(rows))
    if any(r.failure for r in results):
        from vla_rl_ros.core.sim.diagnose import failure_table, plot_failures

        print("\nwhy episodes failed (simulator state; vla_rl_ros/core/sim/diagnose.py):")
        print(failure_table(results))
        if cfg.diagnose_plot:
            plot_failures(results, cfg.diagnose_plot)
            print(f"plot: {cfg.diagnose_plot}")
    if cfg.json:
        Path(cfg.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))


# ----------------------------------------------------------------------------- through the graph
def _evaluate_ros(cfg: EvaluateConfig, ckpt: str) -> int:
    from vla_rl_ros.core.policy.checkpoint import CheckpointError, read_config
    from vla_rl_ros.graph import GraphRunner, load_graph
    from vla_rl_ros.rosio import GraphMonitor

    try:
        size = int(read_config(ckpt)["policy"]["image_size"])
    except CheckpointError as e:
        die(str(e))
    seeds = cfg.seeds
    graph = load_graph("policy_sim", {
        "checkpoint": str(Path(ckpt).resolve()), "backend": cfg.backend, "episodes": len(seeds),
        "seed": seeds[0], "family": cfg.family, "real_time_factor": cfg.real_time_factor,
        "image_width": size, "image_height": size, "max_steps": cfg.max_steps,
        "replan_every": cfg.replan_every, "threads": cfg.threads, "renderer": cfg.renderer,
        "lockstep": cfg.lockstep, "temporal_ensemble": cfg.temporal_ensemble,
    })
    log_dir = cfg.log_dir or tempfile.mkdtemp(prefix="vla_eval_logs_")
    monitor = GraphMonitor(cfg.domain_id)
    runner = GraphRunner(graph, log_dir=log_dir, domain_id=cfg.domain_id).start()
    mode = "lock step" if cfg.lockstep else f"x{cfg.real_time_factor}"
    print(f"evaluating {ckpt} through the ROS graph (sim_node + policy_node, {mode}); logs in {log_dir}")
    t0 = time.monotonic()
    ok = False
    try:
        ok = _watch_episodes(cfg, monitor, runner, log_dir)
    except KeyboardInterrupt:
        pass
    finally:
        pstat = dict(monitor.policy_status)
        runner.stop()
        monitor.close()
    ended = monitor.ended()
    _report_ros(cfg, ended, pstat, time.monotonic() - t0)
    return 0 if ok else 1


def _watch_episodes(cfg: EvaluateConfig, monitor, runner, log_dir: str) -> bool:
    """Progress bar until every episode ended (True), a node died or the graph stalled (False)."""
    from tqdm import tqdm

    bar = tqdm(total=cfg.episodes, unit="ep", desc="evaluate", dynamic_ncols=True)
    try:
        last, last_t = 0, time.monotonic()
        while True:
            time.sleep(0.25)
            ended = monitor.ended()
            if len(ended) != last:
                last, last_t = len(ended), time.monotonic()
            if bar.n != len(ended):
                bar.n = len(ended)
                bar.set_postfix(success=f"{sum(e.get('success', False) for e in ended)}/{len(ended)}")
            if len(ended) >= cfg.episodes:
                return True
            dead = dict(runner.dead())
            if dead:
                for n, c in dead.items():
                    print(f"\nnode {n} exited with code {c}:\n{runner.tail(n)}", file=sys.stderr)
                return False
            if time.monotonic() - last_t > cfg.stall_timeout:
                print(f"\nno episode finished for {cfg.stall_timeout:.0f}s; logs in {log_dir}", file=sys.stderr)
                return False
    finally:
        bar.close()


def _report_ros(cfg: EvaluateConfig, ended: list[dict], pstat: dict, elapsed: float) -> None:
    rows = [{"family": e.get("family"), "success": e.get("success"), "length": e.get("steps", 0),
             "return": e.get("return", 0.0)} for e in ended]
    print(f"\nROS-graph evaluation: {len(rows)} episodes in {elapsed:.0f}s")
    if rows:
        print(success_table(rows))
    ages: dict[int, int] = {}
    for e in ended:
        for k, v in (e.get("chunk_age") or {}).items():
            ages[int(k)] = ages.get(int(k), 0) + int(v)
    if ages:
        total = sum(ages.values())
        late = sum(v for k, v in ages.items() if k < 0 or k >= cfg.replan_every)
        print(f"control ticks: {total}, {late} ({100 * late / total:.1f}%) ran without a chunk from the "
              f"expected observation (arm held or older chunk) -- 0 means the policy kept up with the loop")
    if pstat:
        print(f"policy: {pstat.get('backend')} v{pstat.get('version')}, {pstat.get('chunks')} chunks; "
              f"stamp->chunk latency p50 {pstat.get('latency_p50_ms', float('nan')):.1f} ms, "
              f"p99 {pstat.get('latency_p99_ms', float('nan')):.1f} ms; inference p50 "
              f"{pstat.get('infer_p50_ms', float('nan')):.1f} ms; rejected inputs {pstat.get('rejected_input')}")
    if cfg.json:
        Path(cfg.json).write_text(json.dumps({"episodes": ended, "policy_status": pstat}, indent=1))
