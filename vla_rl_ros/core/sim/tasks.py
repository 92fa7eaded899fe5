"""Language-conditioned table-top tasks: specs, instructions, dense rewards and success tests.

A task is described by a :class:`TaskSpec` (family + target cube + direction or pad). The
spec renders to one canonical English instruction (:func:`make_instruction`) and
:func:`parse_instruction` inverts it (plus a few synonyms), so a process that only receives the
instruction string (e.g. the expert ROS node) recovers the exact spec.

Families:

``pick``   "pick up the red cube" — success: the cube is lifted at least
           :data:`PICK_LIFT` above its resting height *and* touches both fingers.
``push``   "push the blue cube to the left" — success: the cube's centre moved at least
           :data:`PUSH_DISTANCE` along the table's y axis toward the named side (left = +y,
           the robot's left when it faces +x; it appears on the *right* of the front camera
           image, which looks back at the robot), and it is neither lifted nor held.
``place``  "put the green cube on the yellow pad" — success: the cube rests on the table with
           its centre over the pad (within the pad's half size) and is not held by the fingers.

Rewards are dense, shaped and in ``[0, 1]``; they are exactly ``1.0`` whenever the success test
holds. Everything here is pure numpy; the world builds a :class:`WorldState` each control step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

FAMILIES: tuple[str, ...] = ("pick", "push", "place")
CUBE_COLORS: tuple[str, ...] = ("red", "green", "blue")
PAD_COLORS: tuple[str, ...] = ("yellow", "purple")
DIRECTIONS: tuple[str, ...] = ("left", "right")
#: Sign of the motion along the world y axis for each push direction.
DIRECTION_SIGN = {"left": 1.0, "right": -1.0}

CUBES: tuple[str, ...] = tuple(f"{c}_cube" for c in CUBE_COLORS)
PADS: tuple[str, ...] = tuple(f"{c}_pad" for c in PAD_COLORS)
OBJECTS: tuple[str, ...] = CUBES + PADS

TABLE_Z = 0.0  # world z of the table top
CUBE_SIZE = 0.04  # edge length (m)
PAD_SIZE = 0.10  # edge length of a square target pad (m)
PICK_LIFT = 0.08  # required lift of a picked cube above its resting height (m)
PUSH_DISTANCE = 0.10  # required displacement of a pushed cube along y (m)
LIFTED_TOL = 0.015  # a cube higher than rest + this is "lifted" (m)


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; valid families: {', '.join(FAMILIES)}")
    return family


@dataclass(frozen=True)
class TaskSpec:
    """What to do: ``family``, the ``target`` cube's object name, and ``direction`` (push) or
    ``pad`` (place, an object name like ``"yellow_pad"``); unused fields are ``None``."""

    family: str
    target: str
    direction: str | None = None
    pad: str | None = None

    def __post_init__(self):
        _check_family(self.family)
        if self.target not in CUBES:
            raise ValueError(f"unknown target {self.target!r}; valid targets: {', '.join(CUBES)}")
        if self.family == "push":
            if self.direction not in DIRECTIONS:
                raise ValueError(
                    f"push needs a direction in {DIRECTIONS}, got {self.direction!r}"
                )
        elif self.direction is not None:
            raise ValueError(f"{self.family} takes no direction (got {self.direction!r})")
        if self.family == "place":
            if self.pad not in PADS:
                raise ValueError(f"place needs a pad in {PADS}, got {self.pad!r}")
        elif self.pad is not None:
            raise ValueError(f"{self.family} takes no pad (got {self.pad!r})")

    @property
    def color(self) -> str:
        """Colour word of the target cube (``"red"`` ...)."""
        return self.target.split("_")[0]

    @property
    def name(self) -> str:
        """Short identifier, e.g. ``pick_red_cube``, ``push_red_cube_left``,
        ``place_red_cube_yellow_pad`` (see :data:`TASK_NAMES`)."""
        parts = [self.family, self.target]
        if self.direction:
            parts.append(self.direction)
        if self.pad:
            parts.append(self.pad)
        return "_".join(parts)

    @property
    def instruction(self) -> str:
        """The canonical natural-language instruction for this spec."""
        return make_instruction(self)

    @classmethod
    def from_name(cls, name: str) -> "TaskSpec":
        """Inverse of :attr:`name`; raises ``ValueError`` listing valid names."""
        for spec in all_task_specs():
            if spec.name == name:
                return spec
        raise ValueError(f"unknown task name {name!r}; valid names: {', '.join(TASK_NAMES)}")


def all_task_specs(family: str | None = None) -> list[TaskSpec]:
    """Every valid spec (of one family, if given), in a fixed order."""
    fams = FAMILIES if family is None else (_check_family(family),)
    out = []
    for fam in fams:
        for cube in CUBES:
            if fam == "pick":
                out.append(TaskSpec(fam, cube))
            elif fam == "push":
                out.extend(TaskSpec(fam, cube, direction=d) for d in DIRECTIONS)
            else:
                out.extend(TaskSpec(fam, cube, pad=p) for p in PADS)
    return out


#: Every valid task name (``TaskSpec.name``), e.g. ``"push_blue_cube_right"``.
TASK_NAMES: tuple[str, ...] = tuple(s.name for s in all_task_specs())


def make_instruction(spec: TaskSpec) -> str:
    """Canonical instruction: "pick up the red cube", "push the blue cube to the left",
    "put the green cube on the yellow pad"."""
    if spec.family == "pick":
        return f"pick up the {spec.color} cube"
    if spec.family == "push":
        return f"push the {spec.color} cube to the {spec.direction}"
    return f"put the {spec.color} cube on the {spec.pad.split('_')[0]} pad"


_C = "|".join(CUBE_COLORS)
_P = "|".join(PAD_COLORS)
_D = "|".join(DIRECTIONS)
_PATTERNS = [
    ("pick", re.compile(rf"^(?:pick up|pick|lift|grasp|grab) the ({_C}) (?:cube|block)$")),
    (
        "push",
        re.compile(rf"^(?:push|slide|move) the ({_C}) (?:cube|block) (?:to the |to |toward the )?({_D})$"),
    ),
    (
        "place",
        re.compile(rf"^(?:put|place|set) the ({_C}) (?:cube|block) (?:on|onto) the ({_P}) pad$"),
    ),
]
ACCEPTED_FORMS = (
    f"'pick up the <{_C}> cube'",
    f"'push the <{_C}> cube to the <{_D}>'",
    f"'put the <{_C}> cube on the <{_P}> pad'",
)


def parse_instruction(text: str) -> TaskSpec:
    """Recover the :class:`TaskSpec` from an instruction string.

    Case, surrounding whitespace, repeated spaces and a final period are ignored; a few synonyms
    are accepted ("lift"/"grasp" for pick, "slide"/"move" for push, "place"/"onto" for place,
    "block" for cube). Anything else raises ``ValueError`` listing the accepted forms.
    """
    if not isinstance(text, str):
        raise ValueError(f"instruction must be a string, got {type(text).__name__}")
    norm = " ".join(text.strip().lower().rstrip(".!").split())
    for family, pat in _PATTERNS:
        m = pat.match(norm)
        if not m:
            continue
        cube = f"{m.group(1)}_cube"
        if family == "pick":
            return TaskSpec("pick", cube)
        if family == "push":
            return TaskSpec("push", cube, direction=m.group(2))
        return TaskSpec("place", cube, pad=f"{m.group(2)}_pad")
    raise ValueError(
        f"cannot parse instruction {text!r}; accepted forms: " + ", ".join(ACCEPTED_FORMS)
    )


def sample_spec(rng: np.random.Generator, family: str) -> TaskSpec:
    """Draw a spec of ``family`` from ``rng`` (uniform over cubes and directions/pads)."""
    _check_family(family)
    cube = CUBES[int(rng.integers(len(CUBES)))]
    if family == "pick":
        return TaskSpec("pick", cube)
    if family == "push":
        return TaskSpec("push", cube, direction=DIRECTIONS[int(rng.integers(len(DIRECTIONS)))])
    return TaskSpec("place", cube, pad=PADS[int(rng.integers(len(PADS)))])


Pose = tuple  # (position np.ndarray(3), quaternion xyzw np.ndarray(4))


@dataclass(frozen=True)
class WorldState:
    """A snapshot of what the task functions need, built by the world each control step.

    ``object_poses``: name -> (position(3), quaternion xyzw(4)); ``ee_pos``: world position of
    the grasp point between the fingertips (``panda_grasptarget``); ``gripper``: finger opening
    (panda_finger_joint1, m); ``grasped``: names of objects touching both fingers; ``q``: the
    8-dim joint state.
    """

    object_poses: Mapping[str, Pose]
    ee_pos: np.ndarray
    gripper: float
    grasped: frozenset = frozenset()
    q: np.ndarray = field(default_factory=lambda: np.zeros(8))

    def pos(self, name: str) -> np.ndarray:
        return np.asarray(self.object_poses[name][0], dtype=np.float64)


def _closeness(d: float, scale: float = 10.0) -> float:
    return float(1.0 - np.tanh(scale * d))


@dataclass(frozen=True)
class Task:
    """A concrete episode's task: its :class:`TaskSpec` plus the objects' resting positions at
    the start of the episode (pushes are measured from there)."""

    spec: TaskSpec
    initial_positions: Mapping[str, np.ndarray]

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def instruction(self) -> str:
        return make_instruction(self.spec)

    # --------------------------------------------------------------------- helpers
    def _rest_z(self) -> float:
        return float(self.initial_positions[self.spec.target][2])

    def push_progress(self, state: WorldState) -> float:
        """Signed displacement (m) of the target along the instructed direction."""
        y0 = float(self.initial_positions[self.spec.target][1])
        return DIRECTION_SIGN[self.spec.direction] * (state.pos(self.spec.target)[1] - y0)

    def lift_height(self, state: WorldState) -> float:
        """Height (m) of the target cube above its resting height."""
        return float(state.pos(self.spec.target)[2] - self._rest_z())

    def on_pad(self, state: WorldState) -> bool:
        """The target cube's centre is over the instructed pad and the cube rests on the table."""
        c = state.pos(self.spec.target)
        pad = state.pos(self.spec.pad)
        inside = bool(np.all(np.abs(c[:2] - pad[:2]) <= PAD_SIZE / 2))
        return inside and c[2] <= self._rest_z() + LIFTED_TOL

    # --------------------------------------------------------------------- API
    def success(self, state: WorldState) -> bool:
        """Whether the task is achieved in ``state`` (instantaneous test)."""
        t = self.spec.target
        held = t in state.grasped
        if self.family == "pick":
            return held and self.lift_height(state) >= PICK_LIFT
        if self.family == "push":
            return (
                self.push_progress(state) >= PUSH_DISTANCE
                and self.lift_height(state) <= LIFTED_TOL
                and not held
            )
        return self.on_pad(state) and not held

    def reward(self, state: WorldState) -> float:
        """Dense shaped reward in [0, 1]; 1.0 exactly when :meth:`success` holds."""
        if self.success(state):
            return 1.0
        t = self.spec.target
        c = state.pos(t)
        held = t in state.grasped
        reach = _closeness(float(np.linalg.norm(state.ee_pos - c)))
        if self.family == "pick":
            lift = float(np.clip(self.lift_height(state) / PICK_LIFT, 0.0, 1.0))
            r = 0.25 * reach + 0.25 * held + 0.45 * lift * held
        elif self.family == "push":
            s = DIRECTION_SIGN[self.spec.direction]
            behind = c + np.array([0.0, -s * (CUBE_SIZE / 2 + 0.03), 0.0])
            reach = _closeness(float(np.linalg.norm(state.ee_pos - behind)))
            progress = float(np.clip(self.push_progress(state) / PUSH_DISTANCE, 0.0, 1.0))
            if self.lift_height(state) > LIFTED_TOL or held:
                progress *= 0.5
            r = 0.3 * reach + 0.65 * progress
        else:
            pad = state.pos(self.spec.pad)
            transport = _closeness(float(np.linalg.norm(c[:2] - pad[:2])), 5.0)
            r = 0.15 * reach + 0.15 * held + 0.4 * transport * (held or self.on_pad(state))
            r += 0.25 * self.on_pad(state)
        return float(np.clip(r, 0.0, 0.99))
