"""Chunk scheduling: which joint target a controller applies at each control tick (ROS-free).

Shared by the sim node (the simulated controller), direct evaluation and tests, so that the
graph and the ROS-free loops execute chunks identically.
"""

from __future__ import annotations

import numpy as np


class ChunkScheduler:
    """Chooses the joint target for each control tick from the chunks received so far.

    A chunk anchored at observation tick ``a`` holds the target for tick ``a + i + 1`` in point
    ``i``; at tick ``k`` the controller applies point ``k - a`` of the newest chunk (points already
    in the past are skipped; past the end it holds the last point). Pure logic, no ROS.
    """

    def __init__(self, hold: np.ndarray):
        self.reset(hold)

    def reset(self, hold: np.ndarray) -> None:
        self.hold = np.asarray(hold, dtype=np.float64).copy()
        self.chunk: np.ndarray | None = None
        self.anchor = -1
        self.chunk_id = 0
        self.last_index = -1  # point index applied at the last target() call; -1: no chunk yet

    def offer(self, chunk: np.ndarray, anchor: int, chunk_id: int) -> bool:
        if self.chunk is not None and anchor < self.anchor:
            return False  # older than what we run: ignore
        self.chunk, self.anchor, self.chunk_id = chunk, anchor, chunk_id
        return True

    def target(self, tick: int) -> tuple[np.ndarray, str]:
        if self.chunk is None:
            self.last_index = -1
            return self.hold, "hold"
        i = tick - self.anchor
        self.last_index = max(i, -1)
        if i < 0:
            return self.hold, "hold"
        if i >= len(self.chunk):
            self.hold = self.chunk[-1]
            return self.hold, f"{self.chunk_id}:hold"
        self.hold = self.chunk[i]
        return self.hold, f"{self.chunk_id}:{i}"
