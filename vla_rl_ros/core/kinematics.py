"""Forward kinematics of a serial chain read from a URDF (pure numpy; the safety layer's workspace box).

:class:`UrdfChain` takes the joints on the path from the URDF's root link to ``tip``: each
joint's fixed origin (``xyz``, ``rpy``), then a rotation about its axis (revolute, continuous)
or a translation along it (prismatic); fixed joints only carry their origin. ``position(q)``
gives the tip's position in the root link's frame for joint values by name.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

MOVING = ("revolute", "continuous", "prismatic")


class KinematicsError(ValueError):
    """The URDF cannot be read, or the tip link is not in it."""


def _rpy(r: float, p: float, y: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _axis_angle(axis: np.ndarray, a: float) -> np.ndarray:
    x, y, z = axis
    c, s, C = np.cos(a), np.sin(a), 1 - np.cos(a)
    return np.array([[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
                     [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
                     [z * x * C - y * s, z * y * C + x * s, c + z * z * C]])


def _floats(text: str | None, n: int, default: float = 0.0) -> np.ndarray:
    if text is None:
        return np.full(n, default)
    try:
        v = np.array([float(t) for t in text.split()])
    except ValueError:
        raise KinematicsError(f"not {n} numbers: {text!r}") from None
    if v.shape != (n,):
        raise KinematicsError(f"not {n} numbers: {text!r}")
    return v


@dataclass(frozen=True)
class _Joint:
    name: str
    kind: str
    rot: np.ndarray  # origin rotation
    xyz: np.ndarray  # origin translation
    axis: np.ndarray


def parse_urdf(urdf: str) -> ET.Element:
    """The root element of a URDF string; ``KinematicsError`` if it is not XML."""
    try:
        return ET.fromstring(urdf)
    except ET.ParseError as e:
        raise KinematicsError(f"not valid URDF XML: {e}") from None


class UrdfChain:
    def __init__(self, urdf: str, tip: str):
        root = parse_urdf(urdf)
        by_child = {}
        for j in root.iter("joint"):
            parent, child = j.find("parent"), j.find("child")
            if parent is None or child is None:
                continue
            o = j.find("origin")
            ax = j.find("axis")
            axis = _floats(ax.get("xyz") if ax is not None else None, 3, 0.0)
            if j.get("type") in MOVING:
                if ax is None:
                    axis = np.array([1.0, 0.0, 0.0])  # the URDF default
                if np.linalg.norm(axis) == 0:
                    raise KinematicsError(f"joint {j.get('name')!r} has a zero axis")
                axis = axis / np.linalg.norm(axis)
            rpy = _floats(o.get("rpy") if o is not None else None, 3)
            by_child[child.get("link")] = (parent.get("link"), _Joint(
                str(j.get("name")), str(j.get("type")), _rpy(*rpy), _floats(o.get("xyz") if o is not None else None, 3),
                axis))
        if tip not in by_child:
            raise KinematicsError(f"link {tip!r} is not the child of any joint in the URDF")
        chain, link = [], tip
        while link in by_child:
            link, joint = by_child[link]
            chain.append(joint)
            if len(chain) > len(by_child):
                raise KinematicsError("the URDF's joints form a loop")
        self.root_link, self.tip = link, tip
        self.joints = chain[::-1]
        self.moving = [j.name for j in self.joints if j.kind in MOVING]

    def position(self, q: dict) -> np.ndarray:
        """The tip's position (3,) in the root link's frame; ``q`` {joint name: value} must hold
        every moving joint of the chain."""
        missing = [n for n in self.moving if n not in q]
        if missing:
            raise KinematicsError(f"no value for joints {missing}")
        R, p = np.eye(3), np.zeros(3)
        for j in self.joints:
            p = p + R @ j.xyz
            R = R @ j.rot
            if j.kind in ("revolute", "continuous"):
                R = R @ _axis_angle(j.axis, float(q[j.name]))
            elif j.kind == "prismatic":
                p = p + R @ (j.axis * float(q[j.name]))
        return p
