"""The robot's joint layout: the one place the action/state vector order is defined.

Action and state vectors are 8-dimensional: the seven Panda arm joint positions
(rad) followed by the gripper opening, expressed as the position of
``panda_finger_joint1`` in metres (0.0 closed .. 0.04 open; ``panda_finger_joint2``
mirrors it).  Nodes convert ``sensor_msgs/JointState`` and
``trajectory_msgs/JointTrajectory`` to and from this order *by name*, so a message
with joints in another order is reordered, and one with unknown or missing joints
is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
GRIPPER_JOINT = "panda_finger_joint1"
MIMIC_JOINT = "panda_finger_joint2"
ACTION_JOINTS = ARM_JOINTS + (GRIPPER_JOINT,)

# Limits from franka_panda/panda.urdf in pybullet_data (position, rad / m).
LOWER = np.array([-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671, 0.0])
UPPER = np.array([2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671, 0.04])
# Velocity limits (rad/s, m/s) used by safety checks.
VELOCITY = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61, 0.2])

HOME = np.array([0.0, -0.4, 0.0, -2.2, 0.0, 1.85, 0.785, 0.04])


class JointLayoutError(ValueError):
    """A message's joints do not match the robot's layout."""


@dataclass(frozen=True)
class RobotSpec:
    joint_names: tuple = ACTION_JOINTS
    lower: np.ndarray = field(default_factory=lambda: LOWER.copy())
    upper: np.ndarray = field(default_factory=lambda: UPPER.copy())
    velocity: np.ndarray = field(default_factory=lambda: VELOCITY.copy())
    home: np.ndarray = field(default_factory=lambda: HOME.copy())

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def order(self, names, values, *, allow_extra: bool = True) -> np.ndarray:
        """Return ``values`` reordered into this robot's joint order.

        ``names`` may contain extra joints (e.g. the mimic finger) when
        ``allow_extra``; every robot joint must be present exactly once.
        """
        names = list(names)
        values = np.asarray(values, dtype=np.float64)
        if len(names) != len(values):
            raise JointLayoutError(
                f"{len(names)} joint names but {len(values)} values"
            )
        if len(set(names)) != len(names):
            raise JointLayoutError(f"duplicate joint names: {names}")
        missing = [n for n in self.joint_names if n not in names]
        if missing:
            raise JointLayoutError(f"missing joints {missing}; got {names}")
        extra = [n for n in names if n not in self.joint_names and n != MIMIC_JOINT]
        if extra and not allow_extra:
            raise JointLayoutError(f"unknown joints {extra}; expected {list(self.joint_names)}")
        idx = [names.index(n) for n in self.joint_names]
        out = values[idx]
        if not np.all(np.isfinite(out)):
            raise JointLayoutError(f"non-finite joint values: {out.tolist()}")
        return out

    def within_limits(self, q: np.ndarray, tol: float = 1e-6) -> bool:
        q = np.asarray(q)
        return bool(np.all(q >= self.lower - tol) and np.all(q <= self.upper + tol))

    def limit_violations(self, q: np.ndarray, tol: float = 1e-6) -> list[str]:
        q = np.asarray(q)
        out = []
        for name, v, lo, hi in zip(self.joint_names, q, self.lower, self.upper):
            if v < lo - tol or v > hi + tol:
                out.append(f"{name}={v:.4f} outside [{lo:.4f}, {hi:.4f}]")
        return out


PANDA = RobotSpec()
