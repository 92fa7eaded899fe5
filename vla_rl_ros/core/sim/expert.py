"""ScriptedExpert: a privileged, closed-loop IK demonstrator for the table-top tasks.

The expert sees what a privileged demonstrator sees — the 8-dim joint state, the objects'
poses (``name -> (position, quaternion)``, as :meth:`PandaWorld.object_poses` returns and the
``/sim/object_poses`` topic carries) and the task (a :class:`TaskSpec` or the instruction
string) — and answers with the next 8-dim joint-position target. It owns a private PyBullet
DIRECT client holding only a Panda, used for forward and inverse kinematics, so it runs in any
process (the expert ROS node) without access to the simulation.

How it acts: a phase state machine per family chooses a Cartesian waypoint for the grasp point
(``panda_grasptarget``) from the *current* object poses every step (closed loop: a cube that
moved is followed). The commanded grasp point is the *measured* one moved toward the waypoint by
at most a speed limit times ``dt`` (separate horizontal/vertical limits per phase); IK (seeded
with the measured joints, three refinements, joint limits and a home-like rest posture) turns it
into arm joints, and each joint's step from the measured position is bounded
(``max_joint_speed``), so commands are smooth and always close to the state. Phase transitions
test the measured state with "at or past" conditions (e.g. "aligned and at or below the hover
height", "fingers closed on something"), so the machine also catches up when several rows of a
planned chunk were executed between two calls.

- pick:  above the cube -> descend -> close -> lift (and hold).
- push:  above a point behind the cube (the side opposite the instructed direction) -> down to
  table height with the fingers closed -> sweep along y, steering x onto the cube -> retreat.
- place: pick -> lift -> carry over the pad -> lower -> open -> retreat.

A failed grasp (fingers closed on nothing, or the cube not following the hand) or a lost push
sends the machine back to its approach phase.

Optional exploration noise: ``noise_std`` (a scalar for the 7 arm joints, rad, the gripper left
exact; or an 8-vector of per-dimension standard deviations) is added to every emitted target,
which is then clipped into ``robot.LOWER/UPPER``. The noise never feeds back into the plan.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pybullet as p
import pybullet_data

from vla_rl_ros.core.robot import HOME, LOWER, UPPER
from vla_rl_ros.core.sim.tasks import (
    CUBE_SIZE,
    DIRECTION_SIGN,
    TABLE_Z,
    Task,
    TaskSpec,
    parse_instruction,
)

GRASP_LINK = 11
OPEN, CLOSED = 0.04, 0.0
_LIMIT_MARGIN = 1e-6

# Geometry of the motions (grasp-point heights above the table top, m).
APPROACH_DZ = 0.08  # hover above the cube centre before descending
GRASP_DZ = -0.003  # grasp point relative to the cube centre when closing
PICK_LIFT_Z = TABLE_Z + 0.14
CARRY_Z = TABLE_Z + 0.12
PUSH_Z = TABLE_Z + 0.02
PUSH_START_GAP = 0.07  # grasp point behind the cube centre before a push (m)
PUSH_CONTACT = 0.045  # grasp point to cube centre while in contact (m)
PUSH_TRAVEL = 0.15  # how far the expert aims to push (success needs 0.10)
PUSH_DONE = 0.13

# Speed limits of the commanded grasp point, (horizontal, vertical) in m/s.
FAST = (0.40, 0.40)  # free motion
DESCEND = (0.40, 0.15)  # going down onto something: re-centre quickly, descend gently
FINE = (0.15, 0.15)  # in contact (closing, sweeping a cube)
LIFT = (0.15, 0.25)


@dataclass
class _Memory:
    """The expert's internal state (copied for look-ahead planning)."""

    phase: str = "start"
    steps: int = 0  # control steps spent in the current phase
    carrot: np.ndarray | None = None  # last commanded grasp-point position
    start: np.ndarray | None = None  # target cube position at the first observation
    yaw: float = 0.0  # grasp yaw (rad, about world z)
    grasp_offset: np.ndarray | None = None  # cube centre - grasp point while held
    hold_xy: np.ndarray | None = None
    retries: int = 0
    history: list = field(default_factory=list)


def _as_poses(object_poses) -> dict:
    out = {}
    for name, v in object_poses.items():
        try:
            pos, quat = v
            pos = np.asarray(pos, dtype=np.float64).reshape(3)
            quat = np.asarray(quat, dtype=np.float64).reshape(4)
        except (TypeError, ValueError):
            raise ValueError(f"object_poses[{name!r}] must be (position(3), quaternion xyzw(4)), got {v!r}")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat))):
            raise ValueError(f"object_poses[{name!r}] has non-finite values")
        out[name] = (pos, quat)
    return out


class ScriptedExpert:
    """Closed-loop scripted IK expert (see the module docstring).

    ``noise_std``: exploration noise (scalar for the arm joints, or 8 per-dimension stds);
    ``seed``: seeds the noise generator; ``max_joint_speed``: bound on commanded joint motion
    (rad/s) relative to the measured joints.
    """

    def __init__(self, noise_std=0.0, seed: int = 0, max_joint_speed: float = 2.0):
        std = np.asarray(noise_std, dtype=np.float64)
        if std.ndim == 0:
            std = np.concatenate([np.full(7, float(std)), [0.0]])
        if std.shape != (8,) or not np.all(np.isfinite(std)) or np.any(std < 0):
            raise ValueError(f"noise_std must be a non-negative scalar or 8 values, got {noise_std!r}")
        self.noise_std = std
        self.max_joint_speed = float(max_joint_speed)
        self._rng = np.random.default_rng(seed)
        self._client = p.connect(p.DIRECT)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self._client)
        self._robot = p.loadURDF(
            "franka_panda/panda.urdf", [0, 0, TABLE_Z], useFixedBase=True, physicsClientId=self._client
        )
        self._ll = list(LOWER[:7]) + [0.0, 0.0]
        self._ul = list(UPPER[:7]) + [0.04, 0.04]
        self._jr = [u - l for l, u in zip(self._ll, self._ul)]
        self.spec: TaskSpec | None = None
        self._m = _Memory()
        self.last_clean_chunk: np.ndarray | None = None

    # ------------------------------------------------------------------ public API
    def reset(self, spec, seed: int | None = None) -> None:
        """Start a new episode for ``spec`` (a :class:`TaskSpec`, a :class:`Task`, or an
        instruction string, parsed with :func:`parse_instruction`). ``seed`` re-seeds the noise."""
        if isinstance(spec, Task):
            spec = spec.spec
        elif isinstance(spec, str):
            spec = parse_instruction(spec)
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"expected a TaskSpec, Task or instruction string, got {type(spec).__name__}")
        self.spec = spec
        self._m = _Memory()
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    @property
    def phase(self) -> str:
        """Name of the current phase (for logging/debugging)."""
        return self._m.phase

    def act(self, q, object_poses, dt: float = 0.1) -> np.ndarray:
        """Next 8-dim joint target, one control step (``dt`` s) ahead, from the measured joints
        ``q`` and the current ``object_poses``; advances the internal phase machine."""
        q, poses = self._check(q, object_poses, dt)
        return self._noisy(self._step(q, poses, dt, imagine=False))

    def plan_chunk(self, q, object_poses, horizon: int, dt: float = 0.1) -> np.ndarray:
        """A ``(horizon, 8)`` chunk of joint targets for the next ``horizon`` control steps.

        Row 0 is exactly what :meth:`act` would return (and, like :meth:`act`, it advances the
        phase machine by one step). Rows 1.. roll a *copy* of the machine forward assuming the arm
        reaches each target and a held/pushed cube moves with the hand; the internal state is left
        as after row 0, so calling this every control step behaves like calling :meth:`act`.
        Noise (if any) is drawn independently per row. The noise-free rows stay available as
        :attr:`last_clean_chunk` (the expert's *intended* chunk: the label for DART-style
        behaviour cloning, where noisy actions are executed but clean ones are imitated).
        """
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        q, poses = self._check(q, object_poses, dt)
        rows = [self._step(q, poses, dt, imagine=False)]
        saved = copy.deepcopy(self._m)
        q_sim, poses_sim = rows[0].copy(), {k: (v[0].copy(), v[1].copy()) for k, v in poses.items()}
        for _ in range(int(horizon) - 1):
            self._imagine_objects(q_sim, poses_sim)
            rows.append(self._step(q_sim, poses_sim, dt, imagine=True))
            q_sim = rows[-1]
        self._m = saved
        self.last_clean_chunk = np.clip(np.stack(rows), LOWER + _LIMIT_MARGIN, UPPER - _LIMIT_MARGIN)
        return np.stack([self._noisy(r) for r in rows])

    def close(self) -> None:
        """Disconnect the private kinematics client (idempotent)."""
        if self._client is not None:
            try:
                p.disconnect(self._client)
            except Exception:
                pass
            self._client = None

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ kinematics
    def _set_q(self, arm, grip=OPEN) -> None:
        for j, v in enumerate(arm[:7]):
            p.resetJointState(self._robot, j, float(v), physicsClientId=self._client)
        for j in (9, 10):
            p.resetJointState(self._robot, j, float(grip), physicsClientId=self._client)

    def fk(self, q) -> np.ndarray:
        """World position of the grasp point for joint vector ``q`` (7 or 8 values)."""
        self._set_q(q)
        ls = p.getLinkState(self._robot, GRASP_LINK, computeForwardKinematics=True, physicsClientId=self._client)
        return np.array(ls[4])

    def ik(self, q_seed, pos, yaw: float) -> np.ndarray:
        """Arm joints (7) placing the grasp point at ``pos`` pointing down with ``yaw``, solved
        from ``q_seed`` with three refinements."""
        orn = p.getQuaternionFromEuler([np.pi, 0.0, float(yaw)])
        rest = list(HOME[:7]) + [OPEN, OPEN]
        rest[6] = float(HOME[6] + yaw)
        self._set_q(q_seed)
        sol = None
        for _ in range(3):
            sol = p.calculateInverseKinematics(
                self._robot, GRASP_LINK, list(map(float, pos)), orn,
                lowerLimits=self._ll, upperLimits=self._ul, jointRanges=self._jr, restPoses=rest,
                maxNumIterations=60, residualThreshold=1e-5, physicsClientId=self._client,
            )
            self._set_q(sol[:7])
        return np.array(sol[:7])

    # ------------------------------------------------------------------ internals
    def _check(self, q, object_poses, dt):
        if self.spec is None:
            raise RuntimeError("call reset(spec) before act()/plan_chunk()")
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (8,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q must be 8 finite values, got {q!r}")
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        poses = _as_poses(object_poses)
        need = [self.spec.target] + ([self.spec.pad] if self.spec.pad else [])
        missing = [n for n in need if n not in poses]
        if missing:
            raise ValueError(f"object_poses lacks {missing}; got {sorted(poses)}")
        return q, poses

    def _noisy(self, a: np.ndarray) -> np.ndarray:
        if np.any(self.noise_std > 0):
            a = a + self._rng.normal(size=8) * self.noise_std
        return np.clip(a, LOWER + _LIMIT_MARGIN, UPPER - _LIMIT_MARGIN)

    def _grasp_yaw(self, quat) -> float:
        """The cube's yaw folded by its 90° symmetry onto the candidate nearest the current yaw."""
        yaw = p.getEulerFromQuaternion(quat)[2]
        k = np.round((self._m.yaw - yaw) / (np.pi / 2))
        cand = yaw + k * np.pi / 2
        return float(np.clip(cand, -np.pi * 0.6, np.pi * 0.6))

    def _goto(self, phase: str) -> None:
        self._m.history.append(self._m.phase)
        self._m.phase, self._m.steps = phase, 0

    def _step(self, q, poses, dt, imagine: bool) -> np.ndarray:
        m = self._m
        ee = self.fk(q)
        if m.start is None:
            m.start = poses[self.spec.target][0].copy()
        fam = self.spec.family
        if fam == "push":
            wp, grip, speed = self._push(q, ee, poses, imagine)
        else:
            wp, grip, speed = self._pick_place(q, ee, poses, imagine)
        m.steps += 1
        delta = wp - ee  # step from where the hand *is*: executing several rows never overshoots
        v_xy, v_z = speed
        n = float(np.linalg.norm(delta[:2]))
        if n > v_xy * dt:
            delta[:2] *= v_xy * dt / n
        delta[2] = np.clip(delta[2], -v_z * dt, v_z * dt)
        m.carrot = ee + delta
        arm = self.ik(q[:7], m.carrot, m.yaw)
        step = self.max_joint_speed * dt
        arm = np.clip(arm, q[:7] - step, q[:7] + step)
        out = np.concatenate([arm, [grip]])
        return np.clip(out, LOWER + _LIMIT_MARGIN, UPPER - _LIMIT_MARGIN)

    def _pick_place(self, q, ee, poses, imagine):
        m, spec = self._m, self.spec
        cube, quat = poses[spec.target]
        rest_z = TABLE_Z + CUBE_SIZE / 2
        if m.phase == "start":
            self._goto("pregrasp")
        if m.phase == "pregrasp":
            m.yaw = self._grasp_yaw(quat)
            wp = cube + [0.0, 0.0, APPROACH_DZ]
            wp[2] = max(wp[2], rest_z + APPROACH_DZ)
            if np.linalg.norm(ee[:2] - cube[:2]) < 0.015 and ee[2] < wp[2] + 0.02:  # at or below
                self._goto("descend")
            else:
                return wp, OPEN, FAST
        if m.phase == "descend":
            wp = cube + [0.0, 0.0, GRASP_DZ]
            xy_err = np.linalg.norm(ee[:2] - cube[:2])
            if xy_err > 0.06 and not imagine:  # the cube moved away
                self._goto("pregrasp")
                return cube + [0.0, 0.0, APPROACH_DZ], OPEN, FAST
            if xy_err > 0.02:  # re-centre over the cube before going lower
                wp[2] = max(wp[2], min(ee[2], cube[2] + 0.04))
                return wp, OPEN, DESCEND
            if (ee[2] - wp[2] < 0.01) or (m.steps > 20 and xy_err < 0.025):
                self._goto("close")
                m.hold_xy = ee.copy()
            else:
                return wp, OPEN, DESCEND
        if m.phase == "close":
            closed = q[7] < 0.025 if not imagine else m.steps >= 1
            if m.steps >= 3 or (m.steps >= 1 and closed):
                if not imagine and q[7] < 0.006:  # closed on nothing
                    m.retries += 1
                    self._goto("pregrasp")
                    return m.hold_xy + [0.0, 0.0, APPROACH_DZ], OPEN, FAST
                m.grasp_offset = cube - ee
                self._goto("lift")
            else:
                return m.hold_xy, CLOSED, FINE
        if m.phase == "lift":
            if not imagine and np.linalg.norm(cube - ee) > 0.035:  # the cube did not come along
                m.retries += 1
                self._goto("pregrasp")
                return ee + [0.0, 0.0, 0.04], OPEN, FAST
            top = PICK_LIFT_Z if spec.family == "pick" else CARRY_Z
            wp = np.array([m.hold_xy[0], m.hold_xy[1], top])
            if spec.family == "pick" or ee[2] < rest_z + 0.05:
                return wp, CLOSED, LIFT
            self._goto("transport")
        if m.phase == "transport":
            pad = poses[spec.pad][0]
            off = ee[:2] - cube[:2]
            wp = np.array([pad[0] + off[0], pad[1] + off[1], CARRY_Z])
            if not imagine and np.linalg.norm(cube - ee) > 0.035:
                m.retries += 1
                self._goto("pregrasp")
                return ee + [0.0, 0.0, 0.04], OPEN, FAST
            if np.linalg.norm(cube[:2] - pad[:2]) < 0.012:
                self._goto("lower")
            else:
                return wp, CLOSED, FAST
        if m.phase == "lower":
            pad = poses[spec.pad][0]
            off = ee - cube
            wp = np.array([pad[0], pad[1], rest_z + 0.004]) + off
            xy_err = float(np.linalg.norm(cube[:2] - pad[:2]))
            if xy_err > 0.02:  # drifted: re-centre over the pad before going lower
                wp[2] = max(wp[2], ee[2])
            if (cube[2] < rest_z + 0.01 and xy_err < 0.03) or m.steps > 25:
                self._goto("release")
                m.hold_xy = ee.copy()
            else:
                return wp, CLOSED, DESCEND
        if m.phase == "release":
            if m.steps >= 2 or (m.steps >= 1 and q[7] > 0.035):
                self._goto("retreat")
            else:
                return m.hold_xy, OPEN, FINE
        # retreat (terminal)
        return np.array([m.hold_xy[0], m.hold_xy[1], CARRY_Z]), OPEN, LIFT

    def _push(self, q, ee, poses, imagine):
        m, spec = self._m, self.spec
        s = DIRECTION_SIGN[spec.direction]
        cube = poses[spec.target][0]
        m.yaw = 0.0
        behind = np.array([cube[0], cube[1] - s * PUSH_START_GAP, PUSH_Z])
        if m.phase == "start":
            self._goto("above")
        if m.phase == "above":
            wp = behind + [0.0, 0.0, 0.09]
            if np.linalg.norm(ee[:2] - wp[:2]) < 0.015 and ee[2] < wp[2] + 0.025:  # at or below
                self._goto("down")
            else:
                return wp, CLOSED, FAST
        if m.phase == "down":
            # at (or already past, toward the cube) the point behind it, at table height
            lined_up = abs(ee[0] - behind[0]) < 0.02 and s * (ee[1] - behind[1]) > -0.02
            if (lined_up and ee[2] < PUSH_Z + 0.01) or (m.steps > 15 and np.linalg.norm(ee - behind) < 0.025):
                self._goto("sweep")
            else:
                return behind, CLOSED, DESCEND
        if m.phase == "sweep":
            moved = s * (cube[1] - m.start[1])
            if moved >= PUSH_DONE:
                self._goto("retreat")
                m.hold_xy = ee.copy()
            elif not imagine and s * (ee[1] - cube[1]) > -0.02:  # slipped past the cube
                m.retries += 1
                self._goto("above")
                return ee + [0.0, 0.0, 0.06], CLOSED, FAST
            else:
                y_end = m.start[1] + s * (PUSH_TRAVEL - PUSH_CONTACT)
                return np.array([cube[0], y_end, PUSH_Z]), CLOSED, FINE
        return np.array([m.hold_xy[0], m.hold_xy[1], PUSH_Z + 0.08]), CLOSED, FAST

    def _imagine_objects(self, q_sim, poses) -> None:
        """Move the target cube in an imagined ``poses`` as the plan would: with the hand while
        held, ahead of the pusher while sweeping."""
        m, spec = self._m, self.spec
        name = spec.target
        ee = self.fk(q_sim)
        pos, quat = poses[name]
        if m.phase in ("lift", "transport", "lower") and m.grasp_offset is not None:
            poses[name] = (ee + m.grasp_offset, quat)
        elif spec.family == "push" and m.phase == "sweep":
            s = DIRECTION_SIGN[spec.direction]
            front = ee[1] + s * PUSH_CONTACT
            if s * (front - pos[1]) > 0:
                pos = pos.copy()
                pos[1] = front
                poses[name] = (pos, quat)
