"""Direct (ROS-free) bulk collection: scripted-expert demonstrations and explored policy rollouts.

The ROS graph (``vla-rl-ros collect``) is the reference path: it is what runs on a robot and what
the tests check. For thousands of training demonstrations the graph's per-message overhead is
pure cost, so this module runs the *same* episode loop in worker processes — same seeds
(episode ``i`` uses seed ``seed + i``, the family drawn from the seed exactly as ``sim_node``
does), same tick semantics (``core/control.py``: observation ``k``, chunk anchored at ``k``,
point ``k - anchor`` applied over ``k -> k+1``), same frame layout as the trajectory logger
(``core/recording.py``) — and hands the episodes, in order, to the same durable
:class:`~vla_rl_ros.core.data.writer.EpisodeWriter`.

Frames record the executed (noisy) action as ``action`` and the expert's noise-free intention as
``rl.action_mean`` — the DART recipe: execute perturbed actions to visit recovery states, imitate
the clean ones.

With ``policy`` set and ``mode="dagger"``, the checkpoint's mean is executed as deployed (temporal
ensembling, no exploration) and every frame is labelled with what the scripted expert would do
from the visited state (its noise-free next target, in ``rl.action_mean``, σ zero): DAgger's
on-policy relabelling. Behaviour cloning imitates those labels (``train-bc --label auto
--all-episodes``); ``train-rl`` refuses the episodes (no exploration was logged).

Otherwise, with ``policy`` set, the episodes are rollouts of that checkpoint with Gaussian exploration
(:class:`~vla_rl_ros.core.rl.exploration.Explorer`, the same code the exploration node runs):
frames carry μ (clipped to the limits, as the policy node publishes it), σ, the executed action,
its exact truncated-normal log-likelihood and the policy version — what the trajectory logger
records behind ``exploration_node`` in the graph (``config/graphs/explore.yaml``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from vla_rl_ros.core.config import opt
from vla_rl_ros.core.control import ENSEMBLE_DECAY, TEMPORAL_ENSEMBLE, ChunkEnsembler, ChunkScheduler
from vla_rl_ros.core.node_config import BACKENDS, DEFAULT_EXPERT_NOISE, DEFAULT_SIGMA, RENDERERS
from vla_rl_ros.core.recording import parse_reference
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.core.sim.tasks import OBJECTS


@dataclass(frozen=True)
class DirectCollectConfig:
    seed: int = opt(0, "seed of the first scene (episode i: seed + i // seed_repeat)")
    family: str | None = opt(None, "one task family (None: drawn from the seed)")
    expert_noise: float = opt(DEFAULT_EXPERT_NOISE, "std of the expert's action noise (rad)")
    image_size: int = opt(96, "camera image size (px, square)")
    control_rate: float = opt(10.0, "control ticks per simulated second (Hz)")
    max_steps: int = opt(120, "episode length limit (control ticks)")
    renderer: str = opt("tiny", "PyBullet renderer", choices=RENDERERS)
    horizon: int = opt(8, "expert chunk length (tokens)")
    policy: str = opt("", "checkpoint: explored policy rollouts instead of expert demonstrations")
    sigma: tuple[float, ...] = opt((DEFAULT_SIGMA,), "exploration σ of the arm joints (rad)")
    gripper_sigma: float = opt(0.0, "exploration σ of the gripper (m)")
    mode: str = opt("explore", "explore | deploy (μ executed as is) | dagger (μ executed as deployed, frames "
                               "labelled with the scripted expert's action at each visited state)",
                    choices=("explore", "deploy", "dagger"))
    explore_seed: int = opt(0, "seed of the exploration noise")
    backend: str = opt("onnxruntime", "inference backend of the policy", choices=BACKENDS)
    seed_repeat: int = opt(1, "each scene (seed) is rolled out this many times in a row, with different "
                              "exploration noise: groups for train-rl's leave-one-out baseline")
    replan_every: int = opt(1, "explored rollouts: the policy plans a chunk every k ticks and its first k tokens "
                               "run open loop (the decision unit of train-rl); 1 replans every tick")
    rho: float = opt(0.0, "explored rollouts: correlation of the exploration noise of consecutive tokens of a "
                          "chunk (AR(1), in [0, 1)); 0: white noise per token")
    gripper_temperature: float = opt(0.0, "explored rollouts: the gripper as a discrete close/open choice, "
                                          "p(close) = sigmoid((middle − μ)/τ), τ in m; 0: the gripper executes μ")

    def validate(self) -> None:
        from vla_rl_ros.core.config import require

        require(self.replan_every >= 1, "replan_every must be >= 1")
        require(self.mode != "dagger" or (self.policy and self.replan_every == 1),
                "mode dagger needs a policy checkpoint and replan_every 1 (the policy as deployed)")
        require(0.0 <= self.rho < 1.0, f"rho must be in [0, 1), got {self.rho}")
        require(self.seed_repeat >= 1, "seed_repeat must be >= 1")
        require(self.gripper_temperature >= 0, "gripper_temperature must be >= 0")
        require(not (self.gripper_temperature > 0 and self.gripper_sigma > 0),
                "explore the gripper with gripper_temperature (discrete) or gripper_sigma (Gaussian), not both")


_WORLD = None
_EXPERT = None
_POLICY = None
_CFG = None


def _worker_init(cfg: DirectCollectConfig, policy: str = "") -> None:
    """A worker's simulator, expert and (``cfg.policy``) policy; ``policy``, when given, is where
    this worker reads the checkpoint (a Ray actor's local copy of ``cfg.policy``)."""
    global _WORLD, _EXPERT, _POLICY, _CFG
    import dataclasses

    import torch

    if policy:
        cfg = dataclasses.replace(cfg, policy=policy)

    torch.set_num_threads(1)
    from vla_rl_ros.core.sim.expert import ScriptedExpert
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    _WORLD = PandaWorld(SimConfig(
        control_rate=cfg.control_rate, image_width=cfg.image_size, image_height=cfg.image_size,
        renderer=cfg.renderer, max_steps=cfg.max_steps,
    ))
    _EXPERT = ScriptedExpert(noise_std=cfg.expert_noise, seed=cfg.seed)
    _CFG = cfg
    if cfg.policy:
        from vla_rl_ros.core.policy.factory import open_runtime

        _POLICY = open_runtime(cfg.policy, backend=cfg.backend, joint_names=PANDA.joint_names, threads=1)


#: names of the ``observation.environment_state`` vector direct collection records: the position
#: of every object (``OBJECTS`` order) and of the grasp point, in the world frame (m)
_ENV_BODIES = OBJECTS + ("ee",)
ENV_STATE_NAMES = tuple(f"{o}.{a}" for o in _ENV_BODIES for a in "xyz")


def environment_state(world) -> np.ndarray:
    """Privileged positions (see :data:`ENV_STATE_NAMES`) at the current step."""
    return environment_state_from_poses({**world.object_poses(), "ee": world.ee_pose()})


def environment_state_from_poses(poses: dict) -> np.ndarray:
    """The :data:`ENV_STATE_NAMES` vector from ``{name: (position, ...)}`` as ``/sim/object_poses``
    carries it (objects plus the grasp point ``"ee"``); a missing name or a non-finite value is a
    ``ValueError``."""
    missing = [n for n in _ENV_BODIES if n not in poses]
    if missing:
        raise ValueError(f"object poses lack {missing} (have {sorted(poses)})")
    v = np.concatenate([np.asarray(poses[n][0], dtype=np.float64).reshape(3) for n in _ENV_BODIES])
    if not np.all(np.isfinite(v)):
        raise ValueError("object poses contain NaN/Inf")
    return v.astype(np.float32)


def _frame(obs, cams, target, mean, sigma, logp, stamp_ns, index, version, info, env=None) -> dict:
    """One frame in the trajectory logger's layout (``core/recording.py``), plus the privileged
    ``observation.environment_state`` when ``env`` is given."""
    frame = {f"observation.images.{c}": obs["images"][c] for c in cams}
    if env is not None:
        frame["observation.environment_state"] = np.asarray(env, dtype=np.float32)
    frame.update({
        "observation.state": obs["state"].astype(np.float32),
        "action": np.asarray(target, dtype=np.float32),
        "rl.action_mean": np.asarray(mean, dtype=np.float32),
        "rl.sigma": np.asarray(sigma, dtype=np.float32),
        "rl.log_prob": float(logp),
        "rl.chunk_id": stamp_ns,
        "rl.chunk_index": int(index),
        "rl.policy_version": int(version),
        "next.reward": float(info.reward),
        "next.done": bool(info.done),
        "next.success": bool(info.success),
    })
    return frame


def expert_episode(world, expert, seed: int, family: str | None, horizon: int = 8) -> tuple[list, str, dict]:
    """One expert episode with ``world`` → (frames in the logger's layout, instruction, meta)."""
    world.reset(seed=seed, family=family)
    task = world.task
    expert.reset(task.instruction, seed=seed)
    sched = ChunkScheduler(world.joint_positions())
    dt = 1.0 / world.config.control_rate
    frames, ret, k = [], 0.0, 0
    cams = list(world.config.cameras)
    while True:
        obs = world.observe(render=True)
        env = environment_state(world)
        q = obs["state"]
        noisy = np.clip(expert.plan_chunk(q, world.object_poses(), horizon, dt), PANDA.lower, PANDA.upper)
        clean = np.clip(expert.last_clean_chunk, PANDA.lower, PANDA.upper)
        stamp_ns = int(round(k * dt * 1e9))
        sched.offer(noisy, k, stamp_ns)
        target, ref = sched.target(k)
        _, index = parse_reference(ref)
        world.apply_action(target)
        info = world.step_control()
        ret += info.reward
        frames.append(_frame(obs, cams, target, clean[min(max(index, 0), len(clean) - 1)],
                             np.zeros(PANDA.dof), 0.0, stamp_ns, index, 0, info, env))
        k += 1
        if info.done:
            meta = {"seed": seed, "family": task.family, "instruction": task.instruction,
                    "success": bool(info.success), "steps": k, "return": ret, "source": "direct"}
            return frames, task.instruction, meta


def policy_episode(world, runtime, explorer, seed: int, family: str | None, replan_every: int = 1
                   ) -> tuple[list, str, dict]:
    """One rollout of ``runtime`` (a PolicyRuntime) with ``explorer`` → (frames, instruction, meta).
    Tick semantics as :func:`expert_episode` and the graph (policy answering within a tick). The
    policy is asked every ``replan_every`` ticks; the tokens of its chunk run open loop until the
    next one, each logged with its log-likelihood given the chunk's previous token
    (:meth:`~vla_rl_ros.core.rl.exploration.Explorer.token_log_probs`)."""
    from vla_rl_ros.core.policy.runtime import Observation

    world.reset(seed=seed, family=family)
    task = world.task
    sched = ChunkScheduler(world.joint_positions())
    dt = 1.0 / world.config.control_rate
    frames, ret, k = [], 0.0, 0
    cams = list(world.config.cameras)
    mu = executed = sigma = token_lp = None
    while True:
        obs = world.observe(render=True)
        env = environment_state(world)
        q = obs["state"]
        if k % replan_every == 0:
            mu = np.clip(runtime.infer(Observation(obs["images"], q, task.instruction)), PANDA.lower, PANDA.upper)
            if replan_every > len(mu):
                raise ValueError(f"replan_every {replan_every} exceeds the policy's horizon {len(mu)}")
            executed, sigma = explorer.perturb(mu)
            token_lp = None if sigma is None else explorer.token_log_probs(executed, mu, sigma)
            stamp_ns = int(round(k * dt * 1e9))
            sched.offer(executed, k, stamp_ns)
        target, ref = sched.target(k)
        _, index = parse_reference(ref)
        i = min(max(index, 0), len(mu) - 1)
        sig_row = np.zeros(PANDA.dof) if sigma is None else sigma[i]
        logp = 0.0 if sigma is None else float(token_lp[i])
        world.apply_action(target)
        info = world.step_control()
        ret += info.reward
        frames.append(_frame(obs, cams, target, mu[i], sig_row, logp, stamp_ns, index, runtime.version, info, env))
        k += 1
        if info.done:
            meta = {"seed": seed, "family": task.family, "instruction": task.instruction,
                    "success": bool(info.success), "steps": k, "return": ret, "source": "direct",
                    "policy_version": int(runtime.version), "mode": explorer.mode,
                    "exploration": {"rho": float(explorer.cfg.rho), "replan_every": int(replan_every),
                                    "gripper_temperature": float(explorer.cfg.gripper_temperature)}}
            return frames, task.instruction, meta


def dagger_episode(world, runtime, expert, seed: int, family: str | None,
                   temporal_ensemble: bool = TEMPORAL_ENSEMBLE, ensemble_decay: float = ENSEMBLE_DECAY
                   ) -> tuple[list, str, dict]:
    """One rollout of ``runtime``'s mean executed as deployed (a chunk every tick, temporal
    ensembling as :func:`~vla_rl_ros.core.policy.evaluate.run_episode`), each frame labelled with
    ``expert``'s noise-free next target from the state the *policy* reached (``rl.action_mean``,
    σ zero: what ``train-bc --label auto`` imitates). The expert's phase machine follows the
    policy's trajectory ("at or past" transitions), so a missed grasp is labelled with the
    expert's retry and an off-centre descent with its re-centring (DAgger, Ross et al. 2011)."""
    from vla_rl_ros.core.policy.runtime import Observation

    world.reset(seed=seed, family=family)
    task = world.task
    expert.reset(task.instruction, seed=seed)
    sched = ChunkScheduler(world.joint_positions())
    ensembler = ChunkEnsembler(ensemble_decay) if temporal_ensemble else None
    dt = 1.0 / world.config.control_rate
    frames, ret, k = [], 0.0, 0
    cams = list(world.config.cameras)
    zeros = np.zeros(PANDA.dof)
    while True:
        obs = world.observe(render=True)
        env = environment_state(world)
        q = obs["state"]
        expert.plan_chunk(q, world.object_poses(), 1, dt)
        label = np.clip(expert.last_clean_chunk[0], PANDA.lower, PANDA.upper)
        chunk = np.clip(runtime.infer(Observation(obs["images"], q, task.instruction)), PANDA.lower, PANDA.upper)
        if ensembler is not None:
            chunk = ensembler.add(chunk, k)
        stamp_ns = int(round(k * dt * 1e9))
        sched.offer(chunk, k, stamp_ns)
        target, ref = sched.target(k)
        _, index = parse_reference(ref)
        world.apply_action(target)
        info = world.step_control()
        ret += info.reward
        frames.append(_frame(obs, cams, target, label, zeros, 0.0, stamp_ns, index, runtime.version, info, env))
        k += 1
        if info.done:
            meta = {"seed": seed, "family": task.family, "instruction": task.instruction,
                    "success": bool(info.success), "steps": k, "return": ret, "source": "dagger",
                    "policy_version": int(runtime.version), "mode": "dagger",
                    "temporal_ensemble": bool(temporal_ensemble)}
            return frames, task.instruction, meta


def make_explorer(cfg: DirectCollectConfig, seed: int, rep: int):
    """The explorer of rollout ``rep`` of scene ``seed``: its noise depends on (explore_seed, seed, rep) only."""
    from vla_rl_ros.core.rl.exploration import ExplorationConfig, Explorer

    return Explorer(PANDA.lower, PANDA.upper,
                    ExplorationConfig(sigma=list(cfg.sigma), gripper_sigma=cfg.gripper_sigma, rho=cfg.rho,
                                      gripper_temperature=cfg.gripper_temperature),
                    seed=(cfg.explore_seed * 1_000_003 + seed + rep * 7_919_993) % (2**63), mode=cfg.mode)


def _run_one(args) -> tuple[list, str, dict]:
    seed, family, horizon, rep = args
    if _POLICY is not None and _CFG.mode == "dagger":
        return dagger_episode(_WORLD, _POLICY, _EXPERT, seed, family)
    if _POLICY is not None:
        frames, task, meta = policy_episode(_WORLD, _POLICY, make_explorer(_CFG, seed, rep), seed, family,
                                            _CFG.replan_every)
        return frames, task, {**meta, "repeat": rep}
    return expert_episode(_WORLD, _EXPERT, seed, family, horizon)


def _run_outcome(job) -> dict:
    seed, family, rep = job
    _, _, meta = policy_episode(_WORLD, _POLICY, make_explorer(_CFG, seed, rep), seed, family, _CFG.replan_every)
    return {"seed": seed, "family": meta["family"], "repeat": rep, "success": meta["success"], "steps": meta["steps"]}


def _episodes(cfg: DirectCollectConfig, fn, jobs, workers: int, ray_address: str | None):
    """``fn(job)`` for each job, in order, over ``workers`` processes or Ray actors
    (:func:`~vla_rl_ros.core.parallel.ordered_map`; the checkpoint travels through Ray's object store)."""
    from vla_rl_ros.core.parallel import ordered_map

    return ordered_map(_worker_init, {"cfg": cfg, "policy": cfg.policy}, fn, jobs, workers,
                       ray_address=ray_address, ship=("policy",))


def rollout_outcomes(cfg: DirectCollectConfig, jobs, workers: int = 2, progress=None,
                     ray_address: str | None = None) -> list[dict]:
    """Outcomes of rollouts of ``cfg.policy`` (explored, or the mean with ``mode="deploy"``) without
    recording them: ``jobs`` are (seed, family or None, repeat) triples, each rollout's noise
    seeded as in :func:`collect_direct`. Returns one dict per job, in order (seed, family, repeat,
    success, steps); ``progress(n_done)`` after each. ``ray_address``: Ray actors instead of
    processes (:func:`~vla_rl_ros.core.parallel.ordered_map`)."""
    if not cfg.policy:
        raise ValueError("rollout_outcomes needs cfg.policy (a checkpoint)")
    cfg.validate()
    out = []
    for r in _episodes(cfg, _run_outcome, [tuple(j) for j in jobs], workers, ray_address):
        out.append(r)
        if progress:
            progress(len(out))
    return out


def collect_direct(out: str, episodes: int, cfg: DirectCollectConfig, workers: int = 2,
                   repo_id: str = "local/vla_rl_ros", progress=None, ray_address: str | None = None) -> dict:
    """Collect ``episodes`` expert (or, with ``cfg.policy``, explored policy) episodes into the LeRobot dataset at ``out`` (appending).

    ``progress(n_done, n_success)`` is called after each episode is queued. Returns a summary.
    ``ray_address``: the episodes run on Ray actors instead of processes
    (:func:`~vla_rl_ros.core.parallel.ordered_map`); the dataset is the same.
    """
    from vla_rl_ros.core.data.schema import make_features
    from vla_rl_ros.core.data.writer import EpisodeWriter

    cfg.validate()
    features = make_features(list(PANDA.joint_names), ("front",), image_shape=(cfg.image_size, cfg.image_size),
                             environment_state=ENV_STATE_NAMES)
    writer = EpisodeWriter(root=out, repo_id=repo_id, fps=int(round(cfg.control_rate)), features=features,
                           robot_type="panda")
    rep = max(1, int(cfg.seed_repeat))
    jobs = [(cfg.seed + i // rep, cfg.family, cfg.horizon, i % rep) for i in range(episodes)]
    t0 = time.monotonic()
    n_ok = 0
    try:
        for i, (frames, task, meta) in enumerate(_episodes(cfg, _run_one, jobs, workers, ray_address)):
            writer.submit(frames, task, meta)
            n_ok += bool(meta["success"])
            writer.poll()
            if progress:
                progress(i + 1, n_ok)
        writer.close(timeout=600.0)
    except BaseException:
        writer.close(timeout=600.0)
        raise
    failed = writer.failed_episodes()
    return {"episodes": episodes, "success": n_ok, "saved": len(writer.saved_episodes()),
            "failed": len(failed), "seconds": time.monotonic() - t0}
