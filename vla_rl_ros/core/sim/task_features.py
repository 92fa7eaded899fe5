"""The simulator's task knowledge as training data: privileged critic features and auxiliary targets.

Both read ``observation.environment_state`` (every object's position then the grasp point, see
``core/collect.ENV_STATE_NAMES``) and the instruction, and know the task families' goals
(:mod:`.tasks`). The learners receive them as data or as a function passed in — ``train_rl``'s
``privileged`` argument (:func:`episode_privileged_features`), ``load_episodes``'s ``aux_targets``
(:func:`aux_targets`) — so ``core/rl`` and ``core/policy`` know nothing of this simulator.

**Privileged critic features.** The value function is never deployed — only the action head is —
so in simulation it may see what the policy cannot: :func:`privileged_features` turns the logged
positions into the few task-relative numbers that decide an episode's outcome (grasp point →
instructed cube, cube → goal, lift, gripper opening, progress in time). This is the asymmetric
actor-critic of sim-to-real RL; on a robot, without environment state, the critic uses the frozen
backbone's features.

**Auxiliary grounding targets** (behaviour cloning's aux head): the instructed cube's position, the
goal, cube − grasp point, goal − cube, and the (x, y) of every object.
"""

from __future__ import annotations

import numpy as np

from vla_rl_ros.core.sim.tasks import (
    DIRECTION_SIGN, FAMILIES, OBJECTS, PICK_LIFT, PUSH_DISTANCE, parse_instruction,
)

#: names of the per-decision privileged critic features (see :func:`privileged_features`)
PRIVILEGED_NAMES = (
    "ee_to_cube.x", "ee_to_cube.y", "ee_to_cube.z", "ee_to_cube.dist",
    "cube_to_goal.x", "cube_to_goal.y", "cube_to_goal.dist",
    "cube.lift", "gripper", "time",
) + tuple(f"family.{f}" for f in FAMILIES)

#: the episode length the ``time`` feature is normalised by (the simulator's default max_steps)
TIME_SCALE_STEPS = 120


def _obj(env: np.ndarray, name: str) -> np.ndarray:
    i = OBJECTS.index(name)
    return np.asarray(env[3 * i : 3 * i + 3], dtype=np.float64)


def privileged_features(env: np.ndarray, env_first: np.ndarray, instruction: str, gripper: float,
                        t: int, max_steps: int = TIME_SCALE_STEPS) -> np.ndarray:
    """Task-relative privileged state of one frame.

    ``env``: the frame's ``observation.environment_state`` (OBJECTS then the grasp point, xyz
    each); ``env_first``: the episode's first frame (push and lift are measured from the start);
    ``gripper``: the finger opening (m). The goal of a pick is 8 cm above the cube's start, of a
    push 10 cm along the instructed direction, of a place the pad's centre.
    """
    env = np.asarray(env, dtype=np.float64)
    if env.shape[0] != 3 * (len(OBJECTS) + 1):
        raise ValueError(f"environment_state has {env.shape[0]} values, expected {3 * (len(OBJECTS) + 1)}")
    spec = parse_instruction(instruction)
    ee = env[-3:]
    cube, cube0 = _obj(env, spec.target), _obj(env_first, spec.target)
    if spec.family == "place":
        goal = _obj(env, spec.pad)
    elif spec.family == "push":
        goal = cube0 + np.array([0.0, DIRECTION_SIGN[spec.direction] * PUSH_DISTANCE, 0.0])
    else:
        goal = cube0 + np.array([0.0, 0.0, PICK_LIFT])
    d = ee - cube
    g = goal - cube
    fam = [float(spec.family == f) for f in FAMILIES]
    return np.array([*d, np.linalg.norm(d), g[0], g[1], np.linalg.norm(g[:2]) if spec.family != "pick" else abs(g[2]),
                     cube[2] - cube0[2], gripper, t / max_steps, *fam], dtype=np.float32)


def episode_privileged_features(env: np.ndarray, state: np.ndarray, instruction: str) -> np.ndarray | None:
    """(T, len(PRIVILEGED_NAMES)) privileged features of every frame of one logged episode
    (``env``: its environment_state, ``state``: its joint state, the gripper opening last), or
    None when the episode is not one of this simulator's tasks / layouts (no privileged critic).
    The function ``train_rl(privileged=...)`` takes."""
    env = np.asarray(env)
    try:
        return np.stack([privileged_features(env[t], env[0], instruction, float(state[t][-1]), t)
                         for t in range(len(env))])
    except ValueError:
        return None


#: width of :func:`aux_targets`' output
AUX_DIM = 3 + 3 + 3 + 3 + 2 * len(OBJECTS)


def aux_targets(env: np.ndarray, task: str) -> np.ndarray:
    """(T, 18) ``observation.environment_state`` (see ``core/collect.ENV_STATE_NAMES``) of one
    episode + its instruction -> (T, AUX_DIM) targets for the policy's aux head: the instructed
    cube's position, the goal (pick: the cube lifted; push: the cube moved along y; place: on the
    pad), cube − grasp point, goal − cube, and the (x, y) of every object (``OBJECTS`` order); all
    world-frame metres. The function ``load_episodes(aux_targets=...)`` takes."""
    env = np.asarray(env, dtype=np.float32)
    n_obj = len(OBJECTS)
    if env.ndim != 2 or env.shape[1] != 3 * (n_obj + 1):
        raise ValueError(f"environment_state must be (T, {3 * (n_obj + 1)}), got {env.shape}")
    spec = parse_instruction(task)
    pos = env[:, : 3 * n_obj].reshape(len(env), n_obj, 3)
    ee = env[:, 3 * n_obj:]
    cube = pos[:, OBJECTS.index(spec.target)]
    start = cube[0]
    if spec.family == "pick":
        goal = start + np.array([0.0, 0.0, PICK_LIFT], np.float32)
    elif spec.family == "push":
        goal = start + np.array([0.0, DIRECTION_SIGN[spec.direction] * PUSH_DISTANCE, 0.0], np.float32)
    else:
        pad = pos[0, OBJECTS.index(spec.pad)]
        goal = np.array([pad[0], pad[1], start[2]], np.float32)
    goal = np.broadcast_to(goal, cube.shape)
    return np.concatenate([cube, goal, cube - ee, goal - cube, pos[:, :, :2].reshape(len(env), -1)], axis=1)


#: contact label (:func:`episode_contact`): the grasp point within this distance of a held cube (m)
HOLD_RADIUS = 0.03
#: ... and the cube at least this far above its start (m): held in the air, not resting beside the fingers
HOLD_LIFT = 0.01
#: a push is in contact while the grasp point is within this distance of the cube (m) ...
PUSH_RADIUS = 0.06
#: ... and the cube has moved at least this far on the table since the start (m)
PUSH_MOVED = 0.01


def episode_contact(env: np.ndarray, state: np.ndarray, instruction: str) -> np.ndarray | None:
    """(T,) bool: the gripper holds the instructed cube in the air (pick, place) or is pushing it
    (push) at each frame of one logged episode; None when the episode is not one of this
    simulator's tasks. The world model's contact label (``core/wm/data.load_frames``)."""
    env = np.asarray(env, dtype=np.float64)
    try:
        spec = parse_instruction(instruction)
    except ValueError:
        return None
    if env.ndim != 2 or env.shape[1] != 3 * (len(OBJECTS) + 1):
        return None
    i = OBJECTS.index(spec.target)
    cube, ee = env[:, 3 * i : 3 * i + 3], env[:, -3:]
    dist = np.linalg.norm(ee - cube, axis=1)
    if spec.family == "push":
        return (dist < PUSH_RADIUS) & (np.linalg.norm(cube[:, :2] - cube[0, :2], axis=1) > PUSH_MOVED)
    return (dist < HOLD_RADIUS) & (cube[:, 2] - cube[0, 2] > HOLD_LIFT)
