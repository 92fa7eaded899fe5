"""OpenCV frame source: a device index, a video file or a stream URL, as RGB uint8 arrays."""

from __future__ import annotations

import os

import numpy as np


class CameraError(RuntimeError):
    """The source cannot be opened or stopped delivering frames."""


def parse_source(source: str | int):
    """"0" -> device 0; anything else is a path or URL."""
    if isinstance(source, int):
        return source
    s = str(source).strip()
    if not s:
        raise CameraError("empty camera source")
    return int(s) if s.isdigit() else s


class CameraSource:
    def __init__(self, source: str | int, width: int = 0, height: int = 0, loop_file: bool = True):
        self.source = parse_source(source)
        self.width, self.height = int(width), int(height)
        self.loop_file = loop_file
        self.cap = None

    @property
    def is_file(self) -> bool:
        return isinstance(self.source, str) and "://" not in self.source

    @property
    def is_open(self) -> bool:
        return self.cap is not None

    def describe(self) -> str:
        if self.cap is None:
            return f"{self.source!r} (closed)"
        import cv2

        w = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return f"{self.source!r} {w}x{h} -> {self.width or w}x{self.height or h}"

    def open(self) -> None:
        import cv2

        if self.is_file and not os.path.exists(self.source):
            raise CameraError(f"camera source {self.source!r}: no such file")
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            kind = "device" if isinstance(self.source, int) else "source"
            raise CameraError(f"cannot open camera {kind} {self.source!r}")
        self.cap = cap

    def read(self) -> np.ndarray:
        import cv2

        if self.cap is None:
            raise CameraError("camera is not open")
        ok, frame = self.cap.read()
        if not ok and self.is_file and self.loop_file:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        if not ok or frame is None:
            raise CameraError(f"camera {self.source!r} returned no frame")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if self.width and self.height and (frame.shape[1], frame.shape[0]) != (self.width, self.height):
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


#: largest frame a node decodes or fits (pixels per side): a bound on hostile or broken input
MAX_SIDE = 8192


def fit_image(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``img`` (H, W, 3) uint8 cropped around its centre to the aspect ratio of ``hw`` and resized
    to it (area interpolation): a real camera's 640x480 frame for a policy trained on 96x96 keeps
    its proportions (a plain resize would squash it). Unchanged when it already has that size."""
    import cv2

    h, w = img.shape[:2]
    th, tw = int(hw[0]), int(hw[1])
    if (h, w) == (th, tw):
        return img
    if min(h, w, th, tw) <= 0 or max(h, w) > MAX_SIDE:
        raise ValueError(f"cannot fit a {w}x{h} image to {tw}x{th}")
    if w * th > h * tw:  # wider than the target: crop the sides
        cw = max(1, round(h * tw / th))
        x0 = (w - cw) // 2
        img = img[:, x0:x0 + cw]
    else:  # taller: crop top and bottom
        ch = max(1, round(w * th / tw))
        y0 = (h - ch) // 2
        img = img[y0:y0 + ch]
    return np.ascontiguousarray(cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA))


def decode_image(data: bytes, max_bytes: int = 32 << 20) -> np.ndarray:
    """A compressed frame (JPEG, PNG: ``sensor_msgs/CompressedImage.data``) as RGB uint8 (H, W, 3);
    ``ValueError`` saying why for anything else."""
    import cv2

    if not data:
        raise ValueError("empty compressed image")
    if len(data) > max_bytes:
        raise ValueError(f"compressed image of {len(data)} bytes (limit {max_bytes})")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("compressed image does not decode (not a JPEG/PNG?)")
    if max(img.shape[:2]) > MAX_SIDE:
        raise ValueError(f"decoded image {img.shape[1]}x{img.shape[0]} is larger than {MAX_SIDE} px")
    return np.ascontiguousarray(img[:, :, ::-1])
