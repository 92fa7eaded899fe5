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
