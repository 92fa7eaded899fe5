"""PandaWorld: a seeded PyBullet table-top world with a Franka Panda and coloured cubes.

The world is what the ``sim_node`` wraps (and what ROS-free evaluation drives directly): a
fixed-base Panda from ``pybullet_data`` standing on a table (its base at the origin, the table
top at z = 0, the workspace in front of it along +x), three 4 cm cubes (red, green, blue) and two
flat, collision-free target pads (yellow, purple) at random non-overlapping poses, and a
language-conditioned :class:`~vla_rl_ros.core.sim.tasks.Task` drawn from the seed.

Control: :meth:`PandaWorld.apply_action` sets position-control targets for the 8-dim action
(7 arm joints + finger opening, :mod:`vla_rl_ros.core.robot` order);
:meth:`PandaWorld.step_control` advances ``physics_rate / control_rate`` fixed 1/240 s substeps
(24 at 10 Hz) and returns the reward/success/done of the new state. An episode is done when the
success test has held for ``success_hold_steps`` consecutive control steps (success) or after
``max_steps`` control steps (timeout).

Reproducibility: :meth:`PandaWorld.reset` rebuilds the simulation from scratch
(``resetSimulation``), so the same seed gives the same task, instruction and object poses, and
the same sequence of actions gives bit-identical joint trajectories, in any process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p
import pybullet_data

from vla_rl_ros.core.robot import HOME, LOWER, PANDA, UPPER, VELOCITY
from vla_rl_ros.core.sim import camera as cam
from vla_rl_ros.core.sim.tasks import (
    CUBE_SIZE,
    CUBES,
    DIRECTION_SIGN,
    FAMILIES,
    OBJECTS,
    PAD_SIZE,
    PADS,
    TABLE_Z,
    Task,
    TaskSpec,
    WorldState,
    sample_spec,
)

ARM_JOINT_IDS = tuple(range(7))
FINGER_JOINT_IDS = (9, 10)
GRASP_LINK = 11  # panda_grasptarget: between the fingertips
HAND_LINK = 8  # panda_hand
ARM_FORCES = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])  # URDF efforts (N·m)
GRIPPER_FORCE = 40.0  # per finger (N)
CUBE_MASS = 0.08  # kg
CUBE_FRICTION = 0.5
TABLE_HEIGHT = 0.625  # table.urdf top surface height above its base
LIMIT_TOL = 1e-4  # numerical slack on joint-limit checks of targets (then clipped)

#: Where objects may be placed (x range, y range), m, in the robot base frame.
CUBE_REGION = ((0.36, 0.62), (-0.22, 0.22))
PAD_REGION = ((0.37, 0.61), (-0.24, 0.24))

COLORS = {
    "red_cube": (0.85, 0.12, 0.10, 1.0),
    "green_cube": (0.12, 0.70, 0.18, 1.0),
    "blue_cube": (0.12, 0.25, 0.90, 1.0),
    "yellow_pad": (0.98, 0.85, 0.10, 1.0),
    "purple_pad": (0.60, 0.20, 0.75, 1.0),
}


@dataclass(frozen=True)
class SimConfig:
    """Simulation settings.

    ``control_rate`` (Hz) is the rate of :meth:`PandaWorld.step_control`; ``physics_rate`` (Hz)
    the fixed physics step, and must be an integer multiple of ``control_rate``. ``cameras``:
    names from ``("front", "wrist")`` included in observations; ``renderer``: ``auto`` (EGL if it
    loads, else tiny) | ``egl`` | ``tiny``. ``max_steps``: control steps per episode.
    ``task_families``: the families a seed-chosen task is drawn from.
    """

    control_rate: float = 10.0
    physics_rate: float = 240.0
    image_width: int = 96
    image_height: int = 96
    cameras: tuple = ("front",)
    renderer: str = "auto"
    max_steps: int = 120
    task_families: tuple = FAMILIES
    success_hold_steps: int = 3

    def __post_init__(self):
        if self.control_rate <= 0 or self.physics_rate <= 0:
            raise ValueError("control_rate and physics_rate must be > 0")
        ratio = self.physics_rate / self.control_rate
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(
                f"physics_rate ({self.physics_rate}) must be an integer multiple of "
                f"control_rate ({self.control_rate})"
            )
        if self.image_width < 1 or self.image_height < 1:
            raise ValueError("image_width and image_height must be >= 1")
        bad = [c for c in self.cameras if c not in cam.CAMERAS]
        if bad:
            raise ValueError(f"unknown camera(s) {bad}; valid: {', '.join(cam.CAMERAS)}")
        if self.renderer not in cam.RENDERERS:
            raise ValueError(f"unknown renderer {self.renderer!r}; valid: {', '.join(cam.RENDERERS)}")
        if self.max_steps < 1 or self.success_hold_steps < 1:
            raise ValueError("max_steps and success_hold_steps must be >= 1")
        if not self.task_families:
            raise ValueError("task_families must not be empty")
        bad = [f for f in self.task_families if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown task family {bad}; valid families: {', '.join(FAMILIES)}")

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return int(round(self.physics_rate / self.control_rate))


@dataclass(frozen=True)
class StepInfo:
    """Outcome of one control step. ``success`` is the episode's success (the task test has held
    for ``success_hold_steps`` consecutive steps; it stays True until reset once reached);
    ``done`` is success or ``step >= max_steps`` (``truncated`` marks the timeout case)."""

    reward: float
    success: bool
    done: bool
    step: int
    truncated: bool = False


def sample_layout(rng: np.random.Generator, spec: TaskSpec) -> dict[str, tuple[float, float, float]]:
    """Non-overlapping object placements ``name -> (x, y, yaw)`` for a task.

    Cubes keep >= 10 cm between centres (room for the open fingers), no cube overlaps a pad,
    pads keep apart. For a push, the target starts where it can travel 15 cm toward the named
    side and no other cube lies in its corridor.
    """
    (cx0, cx1), (cy0, cy1) = CUBE_REGION
    (px0, px1), (py0, py1) = PAD_REGION
    for _ in range(1000):
        placed: dict[str, tuple[float, float, float]] = {}
        ok = True
        order = [spec.target] + [c for c in CUBES if c != spec.target] + list(PADS)
        for name in order:
            for _ in range(200):
                if name in PADS:
                    x, y, yaw = rng.uniform(px0, px1), rng.uniform(py0, py1), 0.0
                else:
                    x, y = rng.uniform(cx0, cx1), rng.uniform(cy0, cy1)
                    yaw = rng.uniform(-np.pi / 4, np.pi / 4)
                    if name == spec.target and spec.family == "push":
                        s = DIRECTION_SIGN[spec.direction]
                        lo, hi = (cy0, cy1 - 0.10) if s > 0 else (cy0 + 0.10, cy1)
                        y = rng.uniform(lo, hi)
                if _fits(name, x, y, placed, spec):
                    placed[name] = (float(x), float(y), float(yaw))
                    break
            else:
                ok = False
                break
        if ok:
            return placed
    raise RuntimeError("could not sample a layout")  # pragma: no cover - region is roomy


def _fits(name, x, y, placed, spec) -> bool:
    for other, (ox, oy, _) in placed.items():
        dx, dy = abs(x - ox), abs(y - oy)
        both_cubes = name in CUBES and other in CUBES
        if both_cubes and np.hypot(dx, dy) < 0.10:
            return False
        if name in PADS and other in PADS and max(dx, dy) < PAD_SIZE + 0.02:
            return False
        if (name in PADS) != (other in PADS) and max(dx, dy) < PAD_SIZE / 2 + CUBE_SIZE * 0.75 + 0.005:
            return False
        if both_cubes and spec.family == "push" and spec.target in (name, other):
            s = DIRECTION_SIGN[spec.direction]
            tx, ty = placed[spec.target][:2] if other == spec.target else (x, y)
            ux, uy = (x, y) if other == spec.target else (ox, oy)
            ahead = s * (uy - ty)
            if abs(ux - tx) < 0.09 and -0.13 < ahead < 0.27:
                return False
    return True


class PandaWorld:
    """A seeded PyBullet Panda table-top world (see the module docstring).

    ``client`` is the PyBullet physics-client id; ``robot`` the Panda body id.
    """

    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self.client = p.connect(p.DIRECT)
        if self.client < 0:  # pragma: no cover
            raise RuntimeError("could not start a PyBullet DIRECT client")
        self._closed = False
        self._renderer: str | None = None
        self._plugin = None
        if self.config.cameras:  # without cameras the renderer is loaded on the first render()
            try:
                self._load_renderer()
            except Exception:
                p.disconnect(self.client)
                self._closed = True
                raise
        self._task: Task | None = None
        self._seed: int | None = None
        self.robot = -1
        self.object_ids: dict[str, int] = {}
        self._target = HOME.copy()
        self._step = 0
        self._hold = 0
        self._done = False
        self._success = False
        self._sim_steps = 0
        self._fresh_scene = True
        self.reset(seed=0)

    # ----------------------------------------------------------------- building
    def _build(self, layout: dict) -> None:
        c = self.client
        p.resetSimulation(physicsClientId=c)
        p.setPhysicsEngineParameter(
            fixedTimeStep=1.0 / self.config.physics_rate,
            numSolverIterations=50,
            deterministicOverlappingPairs=1,
            physicsClientId=c,
        )
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=c)
        flags = p.URDF_ENABLE_CACHED_GRAPHICS_SHAPES
        p.loadURDF("plane.urdf", [0, 0, TABLE_Z - TABLE_HEIGHT], flags=flags, physicsClientId=c)
        self.table = p.loadURDF(
            "table/table.urdf", [0.5, 0, TABLE_Z - TABLE_HEIGHT], flags=flags, physicsClientId=c
        )
        self.robot = p.loadURDF(
            "franka_panda/panda.urdf", [0, 0, TABLE_Z], useFixedBase=True, flags=flags, physicsClientId=c
        )
        for j, q in zip(ARM_JOINT_IDS, HOME[:7]):
            p.resetJointState(self.robot, j, q, 0.0, physicsClientId=c)
        for j in FINGER_JOINT_IDS:
            p.resetJointState(self.robot, j, HOME[7], 0.0, physicsClientId=c)
            p.changeDynamics(self.robot, j, lateralFriction=1.0, spinningFriction=0.01, physicsClientId=c)
        # panda_finger_joint2 mimics joint1: a gear constraint keeps the fingers symmetric, so a
        # squeezed cube stays centred instead of drifting toward one finger.
        gear = p.createConstraint(
            self.robot, FINGER_JOINT_IDS[0], self.robot, FINGER_JOINT_IDS[1], p.JOINT_GEAR,
            [1, 0, 0], [0, 0, 0], [0, 0, 0], physicsClientId=c,
        )
        p.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50, physicsClientId=c)
        half = CUBE_SIZE / 2
        self.object_ids = {}
        for name in OBJECTS:
            x, y, yaw = layout[name]
            quat = p.getQuaternionFromEuler([0, 0, yaw])
            if name in CUBES:
                col = p.createCollisionShape(p.GEOM_BOX, halfExtents=[half] * 3, physicsClientId=c)
                vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[half] * 3, rgbaColor=COLORS[name], physicsClientId=c)
                body = p.createMultiBody(CUBE_MASS, col, vis, [x, y, TABLE_Z + half + 1e-4], quat, physicsClientId=c)
                p.changeDynamics(
                    body, -1, lateralFriction=CUBE_FRICTION, spinningFriction=0.002,
                    rollingFriction=0.0, restitution=0.0, physicsClientId=c,
                )
            else:  # a flat pad with no collision shape: it never obstructs anything
                vis = p.createVisualShape(
                    p.GEOM_BOX, halfExtents=[PAD_SIZE / 2, PAD_SIZE / 2, 0.001],
                    rgbaColor=COLORS[name], physicsClientId=c,
                )
                body = p.createMultiBody(0.0, -1, vis, [x, y, TABLE_Z + 0.0012], quat, physicsClientId=c)
            self.object_ids[name] = body
        self._target = HOME.copy()
        self._send_targets(self._target)

    def _send_targets(self, q: np.ndarray) -> None:
        c = self.client
        for j, qt, f, v in zip(ARM_JOINT_IDS, q[:7], ARM_FORCES, VELOCITY[:7]):
            p.setJointMotorControl2(
                self.robot, j, p.POSITION_CONTROL, targetPosition=float(qt), force=float(f),
                maxVelocity=float(v), physicsClientId=c,
            )
        for j in FINGER_JOINT_IDS:
            p.setJointMotorControl2(
                self.robot, j, p.POSITION_CONTROL, targetPosition=float(q[7]), force=GRIPPER_FORCE,
                maxVelocity=float(VELOCITY[7]), physicsClientId=c,
            )

    # ----------------------------------------------------------------- episode API
    def reset(self, seed: int, family: str | None = None) -> None:
        """Start a new episode from ``seed``: draw the task (family from the seed when ``family``
        is None), the object layout, rebuild the simulation and put the robot at ``HOME``."""
        self._check_open()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if family is not None and family not in FAMILIES:
            raise ValueError(f"unknown task family {family!r}; valid families: {', '.join(FAMILIES)}")
        rng = np.random.default_rng(int(seed))
        fams = self.config.task_families
        pick = fams[int(rng.integers(len(fams)))]  # always drawn: keeps the stream aligned
        spec = sample_spec(rng, family or pick)
        layout = sample_layout(rng, spec)
        self._build(layout)
        self._fresh_scene = True
        for _ in range(12):  # let the cubes settle onto the table
            p.stepSimulation(physicsClientId=self.client)
        init = {n: np.array(pos) for n, (pos, _) in self.object_poses().items()}
        self._task = Task(spec, init)
        self._seed = int(seed)
        self._step = 0
        self._hold = 0
        self._done = False
        self._success = False
        self._sim_steps = 0

    @property
    def task(self) -> Task:
        """The current episode's :class:`~vla_rl_ros.core.sim.tasks.Task`."""
        return self._task

    @property
    def seed(self) -> int | None:
        return self._seed

    @property
    def step_count(self) -> int:
        """Control steps taken in this episode."""
        return self._step

    @property
    def sim_time(self) -> float:
        """Simulated seconds since the episode started."""
        return self._sim_steps / self.config.physics_rate

    def apply_action(self, q_target) -> None:
        """Set the 8-dim joint-position target (arm rad, finger opening m) held until the next
        call. Raises ``ValueError`` on a wrong shape, non-finite values or targets outside
        ``robot.LOWER/UPPER`` by more than ``LIMIT_TOL`` (smaller excursions, e.g. a measured
        state echoed back, are clipped onto the limit)."""
        self._check_open()
        q = np.asarray(q_target, dtype=np.float64)
        if q.shape != (PANDA.dof,):
            raise ValueError(f"action must have shape ({PANDA.dof},), got {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"action has non-finite values: {q.tolist()}")
        bad = PANDA.limit_violations(q, tol=LIMIT_TOL)
        if bad:
            raise ValueError("action beyond joint limits: " + "; ".join(bad))
        q = np.clip(q, LOWER, UPPER)
        self._target = q
        self._send_targets(q)

    def step_control(self) -> StepInfo:
        """Advance one control period (``config.substeps`` physics steps) under the current
        target and score the new state."""
        self._check_open()
        for _ in range(self.config.substeps):
            p.stepSimulation(physicsClientId=self.client)
        self._sim_steps += self.config.substeps
        self._step += 1
        state = self.world_state()
        ok = self._task.success(state)
        reward = self._task.reward(state)
        self._hold = self._hold + 1 if ok else 0
        if not self._done:
            if self._hold >= self.config.success_hold_steps:
                self._done, self._success = True, True
            elif self._step >= self.config.max_steps:
                self._done = True
        truncated = self._done and not self._success
        return StepInfo(float(reward), bool(self._success), bool(self._done), self._step, truncated)

    def step(self, action, render: bool = True):
        """Gym-like convenience: apply ``action``, step, and return
        ``(obs, reward, done, info)`` with ``obs`` from :meth:`observe` and ``info`` holding
        ``success``, ``step``, ``truncated`` and ``task_success`` (the instantaneous test)."""
        self.apply_action(action)
        si = self.step_control()
        info = {
            "success": si.success,
            "step": si.step,
            "truncated": si.truncated,
            "task_success": self._hold > 0,
            "instruction": self._task.instruction,
        }
        return self.observe(render=render), si.reward, si.done, info

    def observe(self, render: bool = True) -> dict:
        """Observation dict: ``state`` (8), ``velocity`` (8), ``images`` {camera: (H,W,3) uint8}
        for ``config.cameras`` (empty when ``render`` is False), ``instruction``."""
        return {
            "state": self.joint_positions(),
            "velocity": self.joint_velocities(),
            "images": {c: self.render(c) for c in self.config.cameras} if render else {},
            "instruction": self._task.instruction,
        }

    # ----------------------------------------------------------------- state
    def joint_positions(self) -> np.ndarray:
        """Measured 8-dim joint state (7 arm joints rad, finger_joint1 opening m)."""
        s = p.getJointStates(self.robot, ARM_JOINT_IDS + FINGER_JOINT_IDS[:1], physicsClientId=self.client)
        return np.array([x[0] for x in s], dtype=np.float64)

    def joint_velocities(self) -> np.ndarray:
        """Measured 8-dim joint velocities (rad/s, m/s)."""
        s = p.getJointStates(self.robot, ARM_JOINT_IDS + FINGER_JOINT_IDS[:1], physicsClientId=self.client)
        return np.array([x[1] for x in s], dtype=np.float64)

    @property
    def last_target(self) -> np.ndarray:
        """The joint target currently held by the motors."""
        return self._target.copy()

    def object_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``name -> (position(3), quaternion xyzw(4))`` for every cube and pad (names as in
        :data:`~vla_rl_ros.core.sim.tasks.OBJECTS`, e.g. ``red_cube``, ``yellow_pad``)."""
        out = {}
        for name, body in self.object_ids.items():
            pos, quat = p.getBasePositionAndOrientation(body, physicsClientId=self.client)
            out[name] = (np.array(pos), np.array(quat))
        return out

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World pose of the grasp point between the fingertips (``panda_grasptarget``)."""
        ls = p.getLinkState(self.robot, GRASP_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        return np.array(ls[4]), np.array(ls[5])

    def grasped_objects(self) -> frozenset:
        """Names of cubes currently in contact with both fingers."""
        out = set()
        for name in CUBES:
            body = self.object_ids[name]
            if all(
                p.getContactPoints(self.robot, body, linkIndexA=f, physicsClientId=self.client)
                for f in FINGER_JOINT_IDS
            ):
                out.add(name)
        return frozenset(out)

    def world_state(self) -> WorldState:
        """The :class:`WorldState` the task functions score."""
        q = self.joint_positions()
        return WorldState(
            object_poses=self.object_poses(),
            ee_pos=self.ee_pose()[0],
            gripper=float(q[7]),
            grasped=self.grasped_objects(),
            q=q,
        )

    # ----------------------------------------------------------------- rendering
    def _load_renderer(self) -> str:
        if self._renderer is None:
            self._renderer, self._plugin = cam.load_renderer(self.client, self.config.renderer)
        return self._renderer

    @property
    def renderer_name(self) -> str:
        """The renderer in use: ``"egl"`` or ``"tiny"`` (``auto`` resolved)."""
        return self._load_renderer()

    def render(self, camera: str = "front") -> np.ndarray:
        """RGB image ``(image_height, image_width, 3)`` uint8 from ``camera`` (front|wrist)."""
        self._check_open()
        if camera == "front":
            view, spec = cam.front_view(), cam.FRONT
        elif camera == "wrist":
            ls = p.getLinkState(self.robot, HAND_LINK, computeForwardKinematics=True, physicsClientId=self.client)
            view, spec = cam.wrist_view(ls[4], ls[5]), cam.WRIST
        else:
            raise ValueError(f"unknown camera {camera!r}; valid: {', '.join(cam.CAMERAS)}")
        args = (self.client, self.config.image_width, self.config.image_height, view, spec, self.renderer_name)
        if self._fresh_scene and self._renderer == "egl":  # EGL prints GL strings for a new scene
            self._fresh_scene = False
            with cam.quiet_stdout():
                return cam.render_rgb(*args)
        return cam.render_rgb(*args)

    # ----------------------------------------------------------------- lifetime
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("PandaWorld is closed")

    def close(self) -> None:
        """Disconnect the physics client (idempotent)."""
        if not self._closed:
            self._closed = True
            with cam.quiet_stdout():  # the EGL plugin says goodbye on stdout
                try:
                    if self._plugin is not None:
                        p.unloadPlugin(self._plugin, physicsClientId=self.client)
                except Exception:
                    pass
                try:
                    p.disconnect(self.client)
                except Exception:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
