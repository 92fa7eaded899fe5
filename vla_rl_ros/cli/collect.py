"""``vla-rl-ros collect``: expert episodes (or explored rollouts of a checkpoint) into a LeRobot
dataset, through the ROS graph (sim + expert + logger) or ``--direct`` in worker processes."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vla_rl_ros.cli.common import (
    RosOptions,
    build_or_die,
    check_writable_dir,
    dataset_summaries,
    die,
    print_dataset_result,
    require_ray,
)
from vla_rl_ros.core.config import add_fields, opt, require, write_config
from vla_rl_ros.core.node_config import DEFAULT_EXPERT_NOISE, DEFAULT_SIGMA, RENDERERS
from vla_rl_ros.core.parallel import ray_option

HELP = "collect expert episodes in sim through the ROS graph (or --direct without ROS)"


@dataclass(frozen=True)
class CollectConfig(RosOptions):
    episodes: int = opt(20, "episodes to collect")
    out: str = opt("", "dataset folder (appended to when it exists)", required=True)
    seed: int = opt(0, "seed of the first episode")
    family: str = opt("", "one task family (default: all, by seed)")
    control_rate: float = opt(10.0, "control ticks per simulated second (Hz)")
    real_time_factor: float = opt(1.0, "real-time factor of the simulation (graph)", aliases=("--speed",))
    image_size: int = opt(96, "camera image size (px, square)")
    expert_noise: float = opt(DEFAULT_EXPERT_NOISE, "expert action noise std (rad)", aliases=("--noise",))
    max_steps: int = opt(120, "episode length limit (control ticks)")
    renderer: str = opt("tiny", "tiny renders identically everywhere; egl is faster at 224 px", choices=RENDERERS)
    stall_timeout: float = opt(120.0, "graph: give up when nothing progressed for this long (s)")
    bags: str = opt("", "graph: the logger also writes each saved episode as an MCAP rosbag2 into this folder")
    direct: bool = opt(False, "bulk mode: the same episode loop and frame layout without ROS, in --workers processes")
    workers: int = opt(2, "worker processes for --direct (Ray actors with --ray)")
    ray: str | None = ray_option()
    checkpoint: str = opt("", "--direct: explored rollouts of this checkpoint instead of the expert",
                          aliases=("--policy",))
    sigma: tuple[float, ...] = opt((DEFAULT_SIGMA,), "--checkpoint: exploration σ of the arm joints (rad)")
    gripper_sigma: float = opt(0.0, "--checkpoint: exploration σ of the gripper (m)")
    explore_seed: int = opt(0, "--checkpoint: seed of the exploration noise")
    seed_repeat: int = opt(1, "roll each scene (seed) out this many times in a row (groups for train-rl's baseline)")
    replan_every: int = opt(1, "--checkpoint: plan every k ticks and run the chunk's first k tokens open loop "
                               "(train-rl's decision unit)")
    rho: float = opt(0.0, "--checkpoint: correlation of the exploration noise of consecutive tokens of a chunk "
                          "(AR(1), [0, 1)); 0: white")
    gripper_temperature: float = opt(0.0, "--checkpoint: explore the gripper as a discrete close/open choice with "
                                          "this temperature (m); 0: the gripper executes μ")
    dagger: bool = opt(False, "--direct --checkpoint: run the checkpoint as deployed (no exploration, temporal "
                              "ensembling) and label every frame with the scripted expert's action at the visited "
                              "state (DAgger); imitate with `train-bc --init CKPT --all-episodes`")

    def validate(self) -> None:
        from vla_rl_ros.core.sim.tasks import FAMILIES

        require(self.episodes >= 1, "--episodes must be >= 1")
        require(not self.family or self.family in FAMILIES,
                f"unknown task family {self.family!r}; valid: {', '.join(FAMILIES)}")
        require(self.direct or not (self.checkpoint or self.seed_repeat != 1),
                "--checkpoint and --seed-repeat need --direct (explored rollouts through the ROS graph: "
                "`vla-rl-ros improve`)")
        require(not (self.bags and self.direct), "--bags needs the graph (its logger writes them), not --direct; "
                "write bags of a --direct dataset with `vla-rl-ros export-bag`")
        require(self.seed_repeat >= 1, "--seed-repeat must be >= 1")
        require(not self.dagger or (self.direct and self.checkpoint and self.replan_every == 1),
                "--dagger needs --direct and --checkpoint (and --replan-every 1: the policy as deployed)")
        require(self.workers >= 1, "--workers must be >= 1")
        require(self.ray is None or self.direct, "--ray needs --direct (the graph runs on one machine; ROS spans "
                "machines through DDS)")
        require(self.real_time_factor > 0 and self.control_rate > 0, "--real-time-factor and --control-rate must be > 0")


def add_arguments(p) -> None:
    add_fields(p, CollectConfig)


def main(args) -> int:
    cfg = build_or_die(CollectConfig, args)
    require_ray(cfg.ray)
    out = check_writable_dir(cfg.out)
    before = len(dataset_summaries(str(out))) if (out / "meta" / "info.json").exists() else 0
    if before:
        print(f"appending to existing dataset at {out} ({before} episodes)")
    if cfg.direct:
        return _collect_direct(cfg, out, before)
    return _collect_graph(cfg, out, before)


def _graph_overrides(cfg: CollectConfig, out: Path) -> dict:
    return {
        "out": str(out), "episodes": cfg.episodes, "seed": cfg.seed, "family": cfg.family,
        "control_rate": cfg.control_rate, "real_time_factor": cfg.real_time_factor,
        "image_width": cfg.image_size, "image_height": cfg.image_size,
        "expert_noise": cfg.expert_noise, "max_steps": cfg.max_steps, "renderer": cfg.renderer,
        "bag_dir": str(Path(cfg.bags).resolve()) if cfg.bags else "",
    }


def _collect_graph(cfg: CollectConfig, out: Path, before: int) -> int:
    from vla_rl_ros.graph import GraphError, GraphRunner, load_graph
    from vla_rl_ros.rosio import GraphMonitor

    log_dir = Path(cfg.log_dir) if cfg.log_dir else out.parent / f"{out.name}_logs"
    try:
        graph = load_graph("collect", _graph_overrides(cfg, out))
    except GraphError as e:
        die(str(e))
    write_config(log_dir / "collect_config.json", "collect", cfg)
    monitor = GraphMonitor(cfg.domain_id)
    runner = GraphRunner(graph, log_dir=str(log_dir), domain_id=cfg.domain_id).start()
    t0 = time.monotonic()
    ok = False
    try:
        ok = _watch(cfg, monitor, runner, log_dir)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the graph (completed episodes are kept)", file=sys.stderr)
    finally:
        runner.stop(order=["sim_node", "expert_node", "trajectory_logger"], timeout=300)
        monitor.close()
    elapsed = time.monotonic() - t0
    with open(log_dir / "episode_events.jsonl", "w") as f:  # what the simulator reported
        for e in monitor.ended():
            f.write(json.dumps(e) + "\n")
    new_rows = print_dataset_result(out, before, elapsed)
    return 0 if ok and len(new_rows) >= cfg.episodes else 1


def _watch(cfg: CollectConfig, monitor, runner, log_dir: Path) -> bool:
    """Progress bar until the logger saved ``cfg.episodes`` (True), a node died or nothing
    progressed for ``stall_timeout`` (False)."""
    from tqdm import tqdm

    bar = tqdm(total=cfg.episodes, unit="ep", desc="collecting", dynamic_ncols=True)
    try:
        last_progress, saved, shown = time.monotonic(), 0, None
        while True:
            time.sleep(0.25)
            ended = monitor.ended()
            new_saved = int(monitor.status.get("saved", 0))
            if new_saved != saved or len(ended) != bar.n:
                last_progress = time.monotonic()
            saved = new_saved
            succ = sum(1 for e in ended if e.get("success"))
            post = dict(ended=len(ended), success=f"{succ}/{len(ended)}", pending=monitor.status.get("pending", 0))
            if min(saved, cfg.episodes) != bar.n or post != shown:
                bar.n = min(saved, cfg.episodes)
                bar.set_postfix(post)
                shown = post
            dead = runner.failed_required() or {n: c for n, c in runner.dead().items() if c not in (0, None)}
            if dead:
                bar.close()
                for n, c in dead.items():
                    print(f"\nnode {n} exited with code {c}; last log lines:\n{runner.tail(n)}", file=sys.stderr)
                return False
            if saved >= cfg.episodes:
                return True
            if time.monotonic() - last_progress > cfg.stall_timeout:
                bar.close()
                print(f"\nno progress for {cfg.stall_timeout:.0f}s; node logs in {log_dir}", file=sys.stderr)
                for n in runner.procs:
                    print(f"--- {n}\n{runner.tail(n, 8)}", file=sys.stderr)
                return False
    finally:
        bar.close()


def _collect_direct(cfg: CollectConfig, out: Path, before: int) -> int:
    from tqdm import tqdm

    from vla_rl_ros.core.collect import DirectCollectConfig, collect_direct

    policy = ""
    if cfg.checkpoint:  # explored rollouts of a checkpoint instead of expert demonstrations
        from vla_rl_ros.core.policy.checkpoint import CheckpointError, read_config

        try:
            pcfg = read_config(cfg.checkpoint)
        except CheckpointError as e:
            die(str(e))
        policy = str(Path(cfg.checkpoint).resolve())
        if cfg.image_size != int(pcfg["policy"]["image_size"]):
            die(f"--image-size {cfg.image_size} but {cfg.checkpoint} was trained on {pcfg['policy']['image_size']} px")
    dc = DirectCollectConfig(
        seed=cfg.seed, family=cfg.family or None, expert_noise=cfg.expert_noise, image_size=cfg.image_size,
        control_rate=cfg.control_rate, max_steps=cfg.max_steps, renderer=cfg.renderer,
        policy=policy, sigma=tuple(cfg.sigma), gripper_sigma=cfg.gripper_sigma, explore_seed=cfg.explore_seed,
        seed_repeat=cfg.seed_repeat, replan_every=cfg.replan_every, rho=cfg.rho,
        gripper_temperature=cfg.gripper_temperature, mode="dagger" if cfg.dagger else "explore",
    )
    try:
        dc.validate()
    except ValueError as e:
        die(str(e))
    bar = tqdm(total=cfg.episodes, unit="ep", desc="collecting (direct)", dynamic_ncols=True)

    def progress(n, ok):
        bar.n = n
        bar.set_postfix(success=f"{ok}/{n}")
        bar.refresh()

    try:
        res = collect_direct(str(out), cfg.episodes, dc, workers=cfg.workers, progress=progress,
                             ray_address=cfg.ray)
    except KeyboardInterrupt:
        print("\ninterrupted (queued episodes are kept)", file=sys.stderr)
        return 130
    finally:
        bar.close()
    # after the run: the dataset's folders are created by the writer
    write_config(out / "meta" / "collect_config.json", "collect", cfg, dc)
    where = f", {cfg.workers} workers" if cfg.ray is None else f", {cfg.workers} Ray actors ({cfg.ray})"
    new_rows = print_dataset_result(out, before, res["seconds"], where)
    return 0 if len(new_rows) >= cfg.episodes and not res["failed"] else 1
