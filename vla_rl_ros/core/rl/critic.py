"""Critic inputs and TD(λ) advantages for :mod:`.trainer`.

**Privileged critic (simulation only).** The value function is never deployed — only the action
head is — so in simulation it may see what the policy cannot: the positions the simulator logs
in ``observation.environment_state`` (every object and the grasp point, see
``core/collect.py``). :func:`privileged_features` turns them into the few task-relative numbers
that decide an episode's outcome (grasp point → instructed cube, cube → goal, lift, gripper
opening, progress in time). A value net on those generalises from a few hundred episodes, where
one on 128-d image features does not (its held-out error is reported either way). This is the
asymmetric actor-critic of sim-to-real RL; on a robot, without environment state, the critic
falls back to the frozen backbone's features.

**TD(λ) advantages (GAE).** With values V at each decision, the TD residual of decision i is
δ_i = R_i + γ^{n_i} V_{i+1} − V_i, where R_i is the discounted reward over the n_i frames until
the next decision, and after the last decision V is the episode's terminal value (success is
absorbing: γ/(1−γ), the same convention as :func:`.trainer.returns`; a timeout: 0).
A_i = Σ_l (γλ)^l δ_{i+l} (time in frames). λ = 1 gives the Monte-Carlo advantage G − V; smaller λ
credits each action with what the critic says changed right after it — far lower variance when
the critic is good, which is the point of giving it privileged inputs.
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


def _obj(env: np.ndarray, name: str) -> np.ndarray:
    i = OBJECTS.index(name)
    return np.asarray(env[3 * i : 3 * i + 3], dtype=np.float64)


def privileged_features(env: np.ndarray, env_first: np.ndarray, instruction: str, gripper: float,
                        t: int, max_steps: int = 120) -> np.ndarray:
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


def gae(values: np.ndarray, t: np.ndarray, rewards: np.ndarray, success: bool, gamma: float,
        lam: float) -> np.ndarray:
    """TD(λ) advantages of one episode's decisions (sorted by ``t``, their first frame).

    ``values``: V at each decision; ``rewards``: the episode's per-frame rewards. See module doc.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0)
    t = np.asarray(t, dtype=np.int64)
    if np.any(np.diff(t) <= 0):
        raise ValueError("decisions must be sorted by their first frame")
    T = len(rewards)
    terminal = gamma / (1.0 - gamma) if success else 0.0
    bounds = np.append(t, T)
    delta = np.zeros(n)
    for i in range(n):
        seg = np.asarray(rewards[bounds[i] : bounds[i + 1]], dtype=np.float64)
        R = float(np.sum(seg * gamma ** np.arange(len(seg))))
        v_next = values[i + 1] if i + 1 < n else terminal
        delta[i] = R + gamma ** len(seg) * v_next - values[i]
    adv = np.zeros(n)
    acc = 0.0
    for i in range(n - 1, -1, -1):
        steps = bounds[i + 1] - bounds[i]
        acc = delta[i] + (gamma * lam) ** steps * acc
        adv[i] = acc
    return adv
