"""Robot profiles (``config/robots/<name>.yaml``): what a real arm's controllers expect.

A profile names the arm controller's joints, its JointTrajectoryController topic and
FollowJointTrajectory action, the gripper interface (``joint``: a joint of the arm controller, as
on the simulated Panda or an SO-100; ``topic``: a forward position controller's
``std_msgs/Float64MultiArray`` topic; ``action``: a ``control_msgs`` GripperCommand action; ``none``),
the commanded joints' position / velocity / acceleration limits, the home pose and the workspace
box. ``policy_joints`` maps a checkpoint's joint names onto the robot's (a Panda-trained checkpoint
on an FR3); a checkpoint whose joints do not map is refused with a message that says which.

The commanded joints are the arm joints followed by the gripper joint (when there is one): the
order of every limit vector. Limits can also be read from a URDF (``/robot_description``):
:func:`limits_from_urdf`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vla_rl_ros.core.paths import REPO_ROOT

GRIPPER_INTERFACES = ("joint", "topic", "action", "none")


class ProfileError(ValueError):
    """A profile is malformed, or a checkpoint's joints do not map onto it."""


def profiles_dir() -> Path:
    return REPO_ROOT / "config" / "robots"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


@dataclass(frozen=True)
class RobotProfile:
    name: str
    arm_joints: tuple[str, ...]
    arm_topic: str
    arm_action: str
    gripper_interface: str
    gripper_joint: str
    gripper_name: str
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    home: np.ndarray
    workspace_min: np.ndarray
    workspace_max: np.ndarray
    policy_joints: dict = field(default_factory=dict)
    description: str = ""
    urdf: str = ""  # a URDF file for the workspace check ("pybullet_data:<path>" inside pybullet's data)
    tip_link: str = ""  # the link whose position must stay inside the workspace box

    @property
    def joints(self) -> tuple[str, ...]:
        """The commanded joints, in the order of every limit vector: arm joints, then the gripper's."""
        return self.arm_joints + ((self.gripper_joint,) if self.gripper_joint else ())

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def controller_joints(self) -> tuple[str, ...]:
        """The joints of the arm controller's trajectories (the gripper only when it is one of them)."""
        return self.joints if self.gripper_interface == "joint" else self.arm_joints

    def robot_name(self, policy_name: str) -> str:
        return self.policy_joints.get(policy_name, policy_name)

    def policy_index(self, policy_joint_names) -> np.ndarray:
        """For each commanded joint, its column in a checkpoint's (or chunk's) joint list. Raises
        ``ProfileError`` naming the joints that do not map."""
        mapped = [self.robot_name(n) for n in policy_joint_names]
        if len(set(mapped)) != len(mapped):
            raise ProfileError(f"joints {list(policy_joint_names)} map onto duplicates {mapped} on {self.name}")
        missing = [j for j in self.joints if j not in mapped]
        extra = [n for n, m in zip(policy_joint_names, mapped) if m not in self.joints]
        if missing or extra:
            raise ProfileError(
                f"the policy's joints {list(policy_joint_names)} do not map onto robot {self.name!r} "
                f"(joints {list(self.joints)}): missing {missing}, unknown {extra}; add a policy_joints "
                f"mapping to config/robots/{self.name}.yaml or use a checkpoint trained for this arm")
        return np.array([mapped.index(j) for j in self.joints])

    def with_limits(self, lower=None, upper=None, velocity=None) -> "RobotProfile":
        """A copy with limits replaced (e.g. from ``/robot_description``); acceleration stays."""
        return replace(self, lower=self.lower if lower is None else np.asarray(lower, float),
                       upper=self.upper if upper is None else np.asarray(upper, float),
                       velocity=self.velocity if velocity is None else np.asarray(velocity, float))


def _vec(d: dict, key: str, n: int, where: str) -> np.ndarray:
    v = d.get(key)
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise ProfileError(f"{where}: {key} must be a list of {n} numbers, got {v!r}")
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: {key} must be numbers, got {v!r}") from None
    if not np.all(np.isfinite(a)):
        raise ProfileError(f"{where}: {key} must be finite, got {v!r}")
    return a


def parse_profile(d: dict, where: str = "profile") -> RobotProfile:
    """A profile from its YAML mapping; every field checked, the first problem raised with its name."""
    if not isinstance(d, dict):
        raise ProfileError(f"{where}: expected a mapping")
    unknown = set(d) - {"name", "description", "arm", "gripper", "limits", "home", "workspace", "policy_joints",
                        "kinematics"}
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    arm, grip, lim = d.get("arm") or {}, d.get("gripper") or {"interface": "none"}, d.get("limits") or {}
    joints = tuple(str(j) for j in arm.get("joints") or ())
    if not joints or len(set(joints)) != len(joints):
        raise ProfileError(f"{where}: arm.joints must be a non-empty list of distinct names")
    name_ok = re.compile(r"/?[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*").fullmatch
    for key in ("topic", "action"):
        if not name_ok(str(arm.get(key, ""))):
            raise ProfileError(f"{where}: arm.{key} must be a ROS name (relative: inside the graph's namespace), "
                               f"got {arm.get(key)!r}")
    iface = str(grip.get("interface", "none"))
    if iface not in GRIPPER_INTERFACES:
        raise ProfileError(f"{where}: gripper.interface must be one of {GRIPPER_INTERFACES}, got {iface!r}")
    gjoint = str(grip.get("joint", "")) if iface != "none" else ""
    if iface != "none" and not gjoint:
        raise ProfileError(f"{where}: gripper.joint is required for interface {iface!r}")
    if gjoint in joints:
        raise ProfileError(f"{where}: gripper.joint {gjoint!r} is also an arm joint")
    gname = str(grip.get("name", ""))
    if iface in ("topic", "action") and not name_ok(gname):
        raise ProfileError(f"{where}: gripper.name (the {iface}) must be a ROS name, got {gname!r}")
    n = len(joints) + (1 if gjoint else 0)
    lower, upper = _vec(lim, "lower", n, where), _vec(lim, "upper", n, where)
    vel, acc = _vec(lim, "velocity", n, where), _vec(lim, "acceleration", n, where)
    if np.any(lower >= upper) or np.any(vel <= 0) or np.any(acc <= 0):
        raise ProfileError(f"{where}: limits need lower < upper and velocity, acceleration > 0")
    home = _vec(d, "home", n, where)
    if np.any(home < lower) or np.any(home > upper):
        raise ProfileError(f"{where}: home {home.tolist()} is outside the position limits")
    ws = d.get("workspace") or {}
    wmin, wmax = _vec(ws, "min", 3, where + " workspace"), _vec(ws, "max", 3, where + " workspace")
    if np.any(wmin >= wmax):
        raise ProfileError(f"{where}: workspace min must be below max")
    pj = {str(k): str(v) for k, v in (d.get("policy_joints") or {}).items()}
    kin = d.get("kinematics") or {}
    if not isinstance(kin, dict) or set(kin) - {"urdf", "tip"}:
        raise ProfileError(f"{where}: kinematics takes urdf (optional) and tip")
    if kin.get("urdf") and not kin.get("tip"):
        raise ProfileError(f"{where}: kinematics.tip (a link of the URDF) is required with kinematics.urdf")
    return RobotProfile(name=str(d.get("name") or where), arm_joints=joints, arm_topic=str(arm["topic"]),
                        arm_action=str(arm["action"]), gripper_interface=iface, gripper_joint=gjoint,
                        gripper_name=gname, lower=lower, upper=upper, velocity=vel, acceleration=acc, home=home,
                        workspace_min=wmin, workspace_max=wmax, policy_joints=pj,
                        description=str(d.get("description", "")), urdf=str(kin.get("urdf", "")),
                        tip_link=str(kin.get("tip", "")))


def load_profile(name_or_path: str) -> RobotProfile:
    """A profile by name (``config/robots/<name>.yaml``) or path."""
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = profiles_dir() / f"{name_or_path}.yaml"
    if not p.is_file():
        raise ProfileError(f"no robot profile {name_or_path!r} (known: {', '.join(available_profiles())}; or a "
                           "path to a .yaml file)")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"{p}: not valid YAML: {e}") from None
    return parse_profile(d, str(p))


def limits_from_urdf(urdf: str, joints) -> dict:
    """Position and velocity limits of ``joints`` from a URDF string (``/robot_description``):
    ``{"lower": [...], "upper": [...], "velocity": [...]}``, a joint without a ``<limit>`` (or
    missing) keeping NaN so the caller falls back to its profile for it."""
    from vla_rl_ros.core.kinematics import KinematicsError, parse_urdf

    try:
        root = parse_urdf(urdf)
    except KinematicsError as e:
        raise ProfileError(f"robot_description is {e}") from None
    found = {}
    for j in root.iter("joint"):
        lim = j.find("limit")
        if lim is not None and j.get("name"):
            found[j.get("name")] = lim
    out = {"lower": [], "upper": [], "velocity": []}
    for name in joints:
        lim = found.get(name)
        for key in out:
            try:
                out[key].append(float(lim.get(key)) if lim is not None and lim.get(key) is not None else np.nan)
            except ValueError:
                out[key].append(np.nan)
    return {k: np.asarray(v) for k, v in out.items()}


def resolve_urdf(path: str) -> str:
    """The text of a profile's URDF: ``pybullet_data:<path>`` inside pybullet's data, else a path
    (relative paths from the repository root)."""
    if path.startswith("pybullet_data:"):
        import pybullet_data

        p = Path(pybullet_data.getDataPath()) / path.split(":", 1)[1]
    else:
        p = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    if not p.is_file():
        raise ProfileError(f"URDF {path!r} not found ({p})")
    return p.read_text()


def tip_function(profile: RobotProfile, urdf: str):
    """``f(q) -> tip position (3,)`` for a joint vector in the profile's order, from ``urdf`` (text)
    and the profile's ``tip_link``. Raises ``ProfileError`` when the chain needs joints the
    profile does not command."""
    from vla_rl_ros.core.kinematics import KinematicsError, UrdfChain

    try:
        chain = UrdfChain(urdf, profile.tip_link)
    except KinematicsError as e:
        raise ProfileError(f"{profile.name}: {e}") from None
    missing = [j for j in chain.moving if j not in profile.joints]
    if missing:
        raise ProfileError(f"{profile.name}: the chain to {profile.tip_link!r} moves joints {missing} the profile "
                           "does not command")
    names = profile.joints
    return lambda q: chain.position(dict(zip(names, q)))


def joint_rename(name_or_path: str, policy_joint_names) -> dict[str, str]:
    """Robot joint name -> the checkpoint's (``policy_joints`` inverted) for the profile, after
    checking that ``policy_joint_names`` map onto it (``ProfileError`` otherwise); {} for ''."""
    if not name_or_path:
        return {}
    prof = load_profile(name_or_path)
    prof.policy_index(policy_joint_names)
    return {r: k for k, r in prof.policy_joints.items()}
