"""Direct (ROS-free) evaluation: the same episode loop the graph runs, in one process.

Tick semantics match the graph exactly (see ``core/control.py`` and ``nodes/sim_node.py``):
observation k is taken, the policy (every ``replan_every`` ticks) returns a chunk anchored at
k, the controller applies point ``k - anchor`` of the newest chunk over the interval k -> k+1.
Given a policy that answers within one control period, the graph and this loop produce the
same trajectories on the same seeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from vla_rl_ros.core.control import ENSEMBLE_DECAY, TEMPORAL_ENSEMBLE, ChunkEnsembler, ChunkScheduler
from vla_rl_ros.core.robot import PANDA


@dataclass
class EpisodeResult:
    seed: int
    family: str
    instruction: str
    success: bool
    steps: int
    ret: float
    moved: str | None = None  # the cube displaced the most (for instruction following)
    failure: str | None = None  # with diagnose: why it failed (core/sim/diagnose.py)
    detail: dict | None = None


def most_moved(world, init: dict) -> str | None:
    poses = world.object_poses()
    best, dist = None, 0.0
    for name, (pos, _) in poses.items():
        if not name.endswith("_cube"):
            continue
        d = float(np.linalg.norm(np.asarray(pos) - init[name]))
        if d > dist:
            best, dist = name, d
    return best if dist > 0.03 else None


def run_episode(world, act, seed: int, family: str | None = None, replan_every: int = 1,
                instruction: str | None = None, diagnose: bool = False, temporal_ensemble: bool = TEMPORAL_ENSEMBLE,
                ensemble_decay: float = ENSEMBLE_DECAY) -> EpisodeResult:
    """``act(obs_dict) -> (H, dof) chunk``; ``instruction`` overrides the task's text (for
    instruction-following tests: same scene, different instruction); ``diagnose`` classifies a
    failure from the simulator's state (:mod:`vla_rl_ros.core.sim.diagnose`);
    ``temporal_ensemble``: each chunk is averaged with the earlier ones that overlap it
    (:class:`~vla_rl_ros.core.control.ChunkEnsembler`, as the policy node does) before it runs."""
    world.reset(seed=seed, family=family)
    text = instruction or world.task.instruction
    init = {n: np.asarray(p) for n, (p, _) in world.object_poses().items()}
    watch = None
    if diagnose:
        from vla_rl_ros.core.sim.diagnose import EpisodeWatch

        watch = EpisodeWatch()
        watch.start(world.task, world.object_poses())
    sched = ChunkScheduler(world.joint_positions())
    ensembler = ChunkEnsembler(ensemble_decay) if temporal_ensemble else None
    ret, k = 0.0, 0
    while True:
        obs = world.observe(render=True)
        obs["instruction"] = text
        if k % replan_every == 0:
            chunk = np.clip(np.asarray(act(obs), dtype=np.float64), PANDA.lower, PANDA.upper)
            if ensembler is not None:
                chunk = ensembler.add(chunk, k)
            sched.offer(chunk, k, k)
        target, _ = sched.target(k)
        world.apply_action(target)
        info = world.step_control()
        ret += info.reward
        k += 1
        if watch is not None:
            watch.step(world.world_state())
        if info.done:
            failure, detail = watch.summary(bool(info.success)) if watch is not None else (None, None)
            return EpisodeResult(seed, world.task.family, text, bool(info.success), k, ret,
                                 most_moved(world, init), failure, detail)


def evaluate(world, act, seeds, family: str | None = None, replan_every: int = 1, progress=None,
             diagnose: bool = False, temporal_ensemble: bool = TEMPORAL_ENSEMBLE, ensemble_decay: float = ENSEMBLE_DECAY):
    results = []
    t0 = time.time()
    for s in seeds:
        results.append(run_episode(world, act, int(s), family, replan_every, diagnose=diagnose,
                                   temporal_ensemble=temporal_ensemble, ensemble_decay=ensemble_decay))
        if progress:
            progress(results, time.time() - t0)
    return results


def success_by_family(results) -> dict:
    out: dict = {}
    for r in results:
        out.setdefault(r.family, []).append(r.success)
    table = {f: (sum(v), len(v)) for f, v in sorted(out.items())}
    table["overall"] = (sum(r.success for r in results), len(results))
    return table


_EVAL = None


def _eval_init(ckpt: str, backend: str, image_size: int | None, max_steps: int, renderer: str) -> None:
    global _EVAL
    import torch

    torch.set_num_threads(1)
    from vla_rl_ros.core.policy.factory import open_runtime
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    rt = open_runtime(ckpt, backend=backend, joint_names=PANDA.joint_names, threads=1)
    size = image_size or rt.cfg.image_size
    world = PandaWorld(SimConfig(image_width=size, image_height=size, cameras=rt.cameras,
                                 max_steps=max_steps, renderer=renderer))
    _EVAL = (rt, world)


def _eval_one(job) -> EpisodeResult:
    from vla_rl_ros.core.policy.runtime import Observation

    seed, family, replan_every, diagnose, instruction, temporal_ensemble, ensemble_decay = job
    rt, world = _EVAL
    if instruction is not None:
        u = rt.understand(instruction)
        if not u.understood and rt.hold_unclear:  # the policy holds: nothing moves, the episode fails
            world.reset(seed=seed, family=family)
            return EpisodeResult(seed, world.task.family, instruction, False, 0, 0.0, None, "refused",
                                 {"reason": u.reason, "best": u.best, "confidence": u.confidence})
    act = lambda o: rt.infer(Observation(o["images"], o["state"], o["instruction"]))  # noqa: E731
    return run_episode(world, act, seed, family, replan_every, diagnose=diagnose, instruction=instruction,
                       temporal_ensemble=temporal_ensemble, ensemble_decay=ensemble_decay)


def evaluate_parallel(ckpt: str, seeds, workers: int = 2, family: str | None = None, replan_every: int = 1,
                      backend: str = "onnxruntime", max_steps: int = 120, renderer: str = "tiny",
                      progress=None, diagnose: bool = False, instructions=None,
                      families=None, temporal_ensemble: bool = TEMPORAL_ENSEMBLE,
                      ensemble_decay: float = ENSEMBLE_DECAY, ray_address: str | None = None) -> list[EpisodeResult]:
    """:func:`evaluate` of checkpoint ``ckpt`` spread over ``workers`` processes (one policy
    runtime + one simulator each, single-threaded). Each episode depends only on its seed, so the
    results equal the single-process loop's, in seed order. ``instructions`` (one per seed)
    replace the tasks' own text; one the policy does not understand is not run (it would hold):
    a failure with ``failure="refused"``. ``families`` (one per seed, instead of ``family`` for
    all) runs each seed's scene as that task family (a stratified bank: ``core/stats.seed_bank``).
    ``ray_address``: Ray actors instead of processes (:func:`~vla_rl_ros.core.parallel.ordered_map`:
    ``""``/``"local"`` a local Ray, otherwise a cluster's address; the checkpoint's files reach the
    actors through Ray's object store, once per call); the results are the same."""
    from vla_rl_ros.core.parallel import ordered_map

    seeds = list(seeds)
    texts = list(instructions) if instructions is not None else [None] * len(seeds)
    if len(texts) != len(seeds):
        raise ValueError(f"{len(texts)} instructions for {len(seeds)} seeds")
    if families is not None and family is not None:
        raise ValueError("give family (all seeds) or families (one per seed), not both")
    fams = list(families) if families is not None else [family] * len(seeds)
    if len(fams) != len(seeds):
        raise ValueError(f"{len(fams)} families for {len(seeds)} seeds")
    jobs = [(int(s), f, replan_every, diagnose, t, temporal_ensemble, ensemble_decay) for s, f, t in zip(seeds, fams, texts)]
    results = []
    t0 = time.time()
    init = {"ckpt": str(ckpt), "backend": backend, "image_size": None, "max_steps": max_steps, "renderer": renderer}
    for r in ordered_map(_eval_init, init, _eval_one, jobs, workers, ray_address=ray_address, ship=("ckpt",)):
        results.append(r)
        if progress:
            progress(results, time.time() - t0)
    return results
