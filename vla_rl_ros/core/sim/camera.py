"""Cameras and renderers for the PyBullet world.

Two renderers: PyBullet's built-in CPU ``tiny`` renderer (always available) and the ``egl``
plugin (``eglRenderer``; OpenGL through EGL, works headless with Mesa's llvmpipe or a GPU).
:func:`load_renderer` picks one for a physics client: ``"auto"`` tries EGL and falls back to
tiny, ``"egl"`` raises if EGL cannot be loaded, ``"tiny"`` never touches EGL.

Cameras: ``front`` is fixed, in front of the table looking back at the robot from above (it
sees the whole workspace and the arm); ``wrist`` is attached to ``panda_hand`` and looks along
the fingers.
"""

from __future__ import annotations

import contextlib
import os
import pkgutil
from dataclasses import dataclass

import numpy as np
import pybullet as p

RENDERERS = ("auto", "egl", "tiny")
CAMERAS = ("front", "wrist")


@contextlib.contextmanager
def quiet_stdout():
    """Silence C-level stdout (the EGL plugin prints its GL strings) inside the block."""
    try:
        fd = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            try:
                import sys

                sys.stdout.flush()
            except Exception:
                pass
            os.dup2(devnull.fileno(), 1)
            try:
                yield
            finally:
                _c_fflush()  # C stdio buffers: drop them while stdout still points at devnull
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def _c_fflush() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:
        pass


def egl_plugin_path() -> str | None:
    """Filesystem path of PyBullet's ``eglRenderer`` plugin, or None if it is not installed."""
    try:
        loader = pkgutil.get_loader("eglRenderer")
    except Exception:
        return None
    return None if loader is None else loader.get_filename()


def load_renderer(client: int, renderer: str) -> tuple[str, int | None]:
    """Prepare ``client`` to render with ``renderer`` (auto|egl|tiny).

    Returns ``(name, plugin_id)`` where name is ``"egl"`` or ``"tiny"`` (the one actually in
    use) and plugin_id is the EGL plugin handle (None for tiny). Raises ``ValueError`` for an
    unknown renderer name and ``RuntimeError`` when ``"egl"`` was demanded but cannot load.
    """
    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}; valid: {', '.join(RENDERERS)}")
    if renderer == "tiny":
        return "tiny", None
    path = egl_plugin_path()
    err = "the eglRenderer plugin is not installed with pybullet"
    if path is not None:
        with quiet_stdout():
            plugin = p.loadPlugin(path, "_eglRendererPlugin", physicsClientId=client)
            works = plugin >= 0 and _probe_egl(client)
        if works:
            return "egl", plugin
        if plugin >= 0:
            p.unloadPlugin(plugin, physicsClientId=client)
            err = f"{path} loaded but a test render failed"
        else:
            err = f"loading {path} failed (no EGL display/driver?)"
    if renderer == "egl":
        raise RuntimeError(f"EGL renderer unavailable: {err}")
    return "tiny", None


def _probe_egl(client: int) -> bool:
    """Render one small frame through the EGL plugin (also absorbs its first-frame chatter)."""
    try:
        view = p.computeViewMatrix((1, 0, 1), (0, 0, 0), (0, 0, 1))
        proj = p.computeProjectionMatrixFOV(60, 1, 0.01, 10)
        w, h, rgba, _, _ = p.getCameraImage(
            16, 16, view, proj, renderer=p.ER_BULLET_HARDWARE_OPENGL, physicsClientId=client
        )
        return w == 16 and h == 16 and np.asarray(rgba).size == 16 * 16 * 4
    except Exception:
        return False


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera: vertical field of view (deg) and clipping planes (m)."""

    fov: float = 50.0
    near: float = 0.02
    far: float = 4.0


FRONT_EYE = (0.95, 0.0, 0.55)
FRONT_TARGET = (0.40, 0.0, 0.10)
FRONT = CameraSpec(fov=58.0, near=0.05, far=4.0)
WRIST = CameraSpec(fov=75.0, near=0.01, far=2.0)


def front_view() -> list:
    """View matrix of the fixed front camera."""
    return p.computeViewMatrix(FRONT_EYE, FRONT_TARGET, (0.0, 0.0, 1.0))


def wrist_view(hand_pos, hand_quat) -> list:
    """View matrix of the wrist camera for a ``panda_hand`` link pose: mounted 5 cm behind the
    hand's x axis, looking along the hand's +z (toward the fingertips)."""
    rot = np.array(p.getMatrixFromQuaternion(hand_quat)).reshape(3, 3)
    x, z = rot[:, 0], rot[:, 2]
    eye = np.asarray(hand_pos) + 0.06 * x + 0.02 * z
    target = eye + 0.3 * z - 0.05 * x
    return p.computeViewMatrix(eye.tolist(), target.tolist(), (-x).tolist())


def render_rgb(client: int, width: int, height: int, view, spec: CameraSpec, renderer: str) -> np.ndarray:
    """Render one RGB frame (uint8, ``(height, width, 3)``)."""
    proj = p.computeProjectionMatrixFOV(spec.fov, width / height, spec.near, spec.far)
    flag = p.ER_BULLET_HARDWARE_OPENGL if renderer == "egl" else p.ER_TINY_RENDERER
    _, _, rgba, _, _ = p.getCameraImage(
        width,
        height,
        viewMatrix=view,
        projectionMatrix=proj,
        renderer=flag,
        flags=p.ER_NO_SEGMENTATION_MASK,
        physicsClientId=client,
    )
    img = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)
    return np.ascontiguousarray(img[..., :3])
