"""The simulator's tasks as Gymnasium environments (no ROS), for RL code of your own.

    import gymnasium as gym
    import vla_rl_ros.envs  # registers the environments below
    env = gym.make("vla_rl_ros/PickCube-v0")
    obs, info = env.reset(seed=1000)   # the same scene as `evaluate --seed 1000 --family pick`

or without the import: ``gym.make("vla_rl_ros.envs:vla_rl_ros/PickCube-v0")``. Vectorised:
``gym.make_vec("vla_rl_ros/PickCube-v0", num_envs=4, vectorization_mode="async",
vector_kwargs={"context": "spawn"})`` (one PyBullet process per environment; ``spawn``, because a
worker forked after torch or the sentence encoder started their threads can deadlock at reset).

| id | task family |
|---|---|
| ``vla_rl_ros/PickCube-v0`` | pick up the instructed cube |
| ``vla_rl_ros/PushCube-v0`` | push the instructed cube to one side |
| ``vla_rl_ros/PlaceCube-v0`` | put the instructed cube on the instructed pad |
| ``vla_rl_ros/Tabletop-v0`` | the family drawn from the seed, as ``evaluate`` and ``compare`` do |

- **Observation** (``Dict``): ``image`` (H, W, 3) uint8 from the front camera (the policy's 96 px
  by default), ``state`` (8,) float32 (seven arm joints in rad, the finger opening in m),
  ``instruction`` (384,) float32, the MiniLM-L6 sentence embedding of the instruction the
  policy would receive (``instruction_embedding=False`` leaves it out and skips loading the
  encoder). The instruction's text is ``info["instruction"]``.
  ``image_size=0`` leaves the image out and never renders (physics only: ~15x the steps per
  second, ``bench/gym_speed.py``); ``environment_state=True`` adds the privileged positions of
  every object and of the grasp point (``environment_state``, 18 floats, m; the names are
  ``vla_rl_ros.core.collect.ENV_STATE_NAMES``), for state-based RL.
- **Action** (``Box``, 8): absolute joint-position targets inside the Panda's limits, held for one
  control period (10 Hz), as the ROS graph's controller executes them. Targets beyond the
  limits raise ``ValueError`` (the simulator's own check) unless ``clip_actions=True``.
- **Reward**: the task's shaped reward in [0, 1] (``core/sim/tasks.py``). ``terminated`` when the
  task has held for ``success_hold_steps`` ticks (``info["success"]``), ``truncated`` at
  ``max_steps`` ticks (120 = 12 s).
- **Seeds**: ``reset(seed=s)`` builds scene ``s`` (the same scene numbers as every other command);
  ``reset()`` without a seed draws the next scene from the environment's generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import gymnasium as gym
    from gymnasium import spaces
except ImportError as e:  # pragma: no cover - gymnasium is in requirements/base.txt
    raise ImportError("vla_rl_ros.envs needs gymnasium: pip install 'gymnasium==1.4.0'") from e

from vla_rl_ros.core.collect import ENV_STATE_NAMES, environment_state
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.core.sim.world import PandaWorld, SimConfig
from vla_rl_ros.core.policy.text import EMBED_DIM, InstructionEncoder

#: environment id -> task family (None: drawn from the seed)
ENV_IDS = {
    "vla_rl_ros/PickCube-v0": "pick",
    "vla_rl_ros/PushCube-v0": "push",
    "vla_rl_ros/PlaceCube-v0": "place",
    "vla_rl_ros/Tabletop-v0": None,
}
#: bound of the privileged positions (m, world frame) in the observation space
ENV_STATE_BOUND_M = 2.0
#: upper bound of scene seeds drawn by ``reset()`` without a seed
MAX_SCENE_SEED = 2**31 - 1


class TabletopEnv(gym.Env):
    """One PyBullet Panda world; see the module doc for spaces, reward and seeds."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, family: str | None = None, image_size: int = 96, max_steps: int = 120,
                 instruction_embedding: bool = True, clip_actions: bool = False, renderer: str = "tiny",
                 render_mode: str | None = None, environment_state: bool = False):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.family = family
        self.render_mode = render_mode
        self.clip_actions = bool(clip_actions)
        if image_size < 0:
            raise ValueError(f"image_size must be >= 0 (0: no image), got {image_size}")
        self.with_image = image_size > 0
        side = image_size or 96  # the renderer's size for render() when the observation has no image
        self.world = PandaWorld(SimConfig(image_width=side, image_height=side, max_steps=max_steps,
                                          renderer=renderer, cameras=("front",) if self.with_image else ()))
        self.with_env_state = bool(environment_state)
        self.encoder = InstructionEncoder() if instruction_embedding else None
        lo, hi = PANDA.lower.astype(np.float32), PANDA.upper.astype(np.float32)
        obs = {"state": spaces.Box(lo - 0.05, hi + 0.05, (PANDA.dof,), np.float32)}
        if self.with_image:
            obs["image"] = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        if self.with_env_state:
            obs["environment_state"] = spaces.Box(-ENV_STATE_BOUND_M, ENV_STATE_BOUND_M, (len(ENV_STATE_NAMES),),
                                                  np.float32)
        if self.encoder is not None:
            obs["instruction"] = spaces.Box(-1.0, 1.0, (EMBED_DIM,), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(lo, hi, (PANDA.dof,), np.float32)
        self._image: np.ndarray | None = None

    def _observe(self) -> dict:
        return self._obs(self.world.observe(render=self.with_image))

    def _obs(self, o: dict) -> dict:
        out = {"state": np.clip(o["state"], self.observation_space["state"].low,
                                self.observation_space["state"].high).astype(np.float32)}
        if self.with_image:
            self._image = out["image"] = o["images"]["front"]
        if self.with_env_state:
            out["environment_state"] = np.clip(environment_state(self.world), -ENV_STATE_BOUND_M, ENV_STATE_BOUND_M)
        if self.encoder is not None:
            out["instruction"] = np.clip(self.encoder.encode(o["instruction"]), -1.0, 1.0).astype(np.float32)
        return out

    def _info(self, **extra) -> dict:
        spec = self.world.task.spec
        return {"instruction": self.world.task.instruction, "seed": self.world.seed, "family": spec.family, **extra}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        scene = int(seed) if seed is not None else int(self.np_random.integers(MAX_SCENE_SEED))
        self.world.reset(scene, family=self.family)
        return self._observe(), self._info(success=False)

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if self.clip_actions:
            a = np.clip(a, PANDA.lower, PANDA.upper)
        obs, reward, done, info = self.world.step(a, render=self.with_image)
        terminated = bool(info["success"])
        truncated = bool(done and not terminated)
        return self._obs(obs), float(reward), terminated, truncated, self._info(success=terminated)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._image if self.with_image else self.world.render("front")

    def close(self):
        self.world.close()


def register_envs() -> list[str]:
    """Register every id of :data:`ENV_IDS` with Gymnasium (idempotent); returns the ids."""
    for env_id, family in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=TabletopEnv, kwargs={"family": family},
                         max_episode_steps=None, disable_env_checker=False)
    return list(ENV_IDS)


register_envs()
