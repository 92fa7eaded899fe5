"""Chunk scheduling: which joint target a controller applies at each control tick (ROS-free).

Shared by the sim node (the simulated controller), direct evaluation and tests, so that the
graph and the ROS-free loops execute chunks identically.
"""

from __future__ import annotations

import numpy as np

#: temporal ensembling of overlapping chunks (ACT, Zhao et al. 2023) on by default wherever the mean
#: policy drives the arm: each tick's target is the weighted mean of every chunk's prediction for it
TEMPORAL_ENSEMBLE = True
#: weight of a chunk's prediction ∝ exp(-ENSEMBLE_DECAY · age), age = ticks since the chunk's
#: observation (0: uniform over every chunk that covers the tick; > 0 favours the newest)
ENSEMBLE_DECAY = 0.0
#: help of the two settings, wherever they are options (evaluate, compare, policy_node)
ENSEMBLE_HELP = ("average each chunk with the earlier ones that overlap it before it runs (ACT temporal "
                 "ensembling, core/control.py: ChunkEnsembler); exploration never does")
DECAY_HELP = "ensemble weight exp(-decay * age in ticks); 0: uniform"


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

    def waiting_for(self, tick: int, replan_every: int) -> bool:
        """True while the chunk answering the newest replan observation (tick ``tick - tick %
        replan_every``) has not arrived: the lock-step controller waits on it."""
        return self.chunk is None or self.anchor < tick - tick % max(1, replan_every)


class ChunkEnsembler:
    """Temporal ensembling of overlapping chunks, applied before a chunk is sent.

    ``add(chunk, tick)`` takes a chunk planned from the observation of tick ``tick`` (point ``i``
    for tick ``tick + i``, the :class:`ChunkScheduler` convention) and returns a chunk of the
    same shape whose point ``i`` is the weighted mean, over this chunk and every earlier one that
    covers tick ``tick + i``, of their predictions for that tick (weight ``exp(-decay · age)``, age
    = ticks since the predicting chunk's observation). A controller that plays the newest chunk
    (a joint trajectory controller, :class:`ChunkScheduler`) then executes the ensemble. Averaging
    the plans of several observations cancels much of the per-frame error of the position read
    from the image, at the price of a lag when the plan changes on purpose.

    Earlier chunks are forgotten once they no longer cover the new chunk's ticks, on
    :meth:`reset` (a new episode, instruction or policy version), and when ``tick`` goes back (a
    restarted clock or episode); a second chunk for the same tick replaces the first. Pure numpy;
    exploration never goes through it (the RL update scores the chunk that was executed).

    ``max_lag`` (> 0; 0: off): when the arm does not follow the plans (a safety layer holding or
    slowing it, a dry run), the older plans run ahead of it and the mean's first point drifts away
    from the measured state; ``add(..., state=q)`` then starts over from the new chunk alone when
    that first point is farther than ``max_lag`` from ``q`` (counted in ``restarts``).
    """

    def __init__(self, decay: float = ENSEMBLE_DECAY, max_lag: float = 0.0):
        if not np.isfinite(decay):
            raise ValueError(f"ensemble decay must be finite, got {decay}")
        if not (np.isfinite(max_lag) and max_lag >= 0):
            raise ValueError(f"ensemble max_lag must be finite and >= 0, got {max_lag}")
        self.decay = float(decay)
        self.max_lag = float(max_lag)
        self.restarts = 0
        self.reset()

    def reset(self) -> None:
        self.chunks: list[tuple[int, np.ndarray]] = []  # (tick, chunk as planned), oldest first

    def add(self, chunk: np.ndarray, tick: int, state: np.ndarray | None = None) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2:
            raise ValueError(f"chunk must be (horizon, dof), got shape {chunk.shape}")
        tick = int(tick)
        if self.chunks and (tick < self.chunks[-1][0] or self.chunks[-1][1].shape[1] != chunk.shape[1]):
            self.reset()
        # a second plan for the same tick (a camera faster than the control rate) replaces the first
        self.chunks = [(t, c) for t, c in self.chunks if t + len(c) > tick and t != tick]
        self.chunks.append((tick, chunk))
        total = np.zeros_like(chunk)
        weight = np.zeros((len(chunk), 1))
        for t, c in self.chunks:
            age = tick - t
            n = min(len(c) - age, len(chunk))  # points of c that cover ticks tick .. tick + n - 1
            w = float(np.exp(-self.decay * age))
            total[:n] += w * c[age:age + n]
            weight[:n] += w
        out = total / weight
        if (self.max_lag > 0 and state is not None and len(self.chunks) > 1
                and np.max(np.abs(out[0] - np.asarray(state, dtype=np.float64))) > self.max_lag):
            self.restarts += 1
            self.chunks = [(tick, chunk)]
            return chunk.copy()
        return out


class CommandWatchdog:
    """Tells a policy that has stopped commanding while its inputs keep arriving from one that
    holds on purpose.

    ``observed(now)`` at every complete observation, ``commanded(now)`` at every chunk sent;
    :meth:`check` says *stalled* when an observation arrived within ``fresh_s`` but no chunk was
    sent for more than ``timeout_s`` (counted from the first observation if none ever was), unless
    the caller names a deliberate hold (no instruction, one not understood). Times in seconds,
    from any monotonic clock. Pure logic; the policy node reports it on its status."""

    def __init__(self, timeout_s: float, fresh_s: float):
        if not (timeout_s > 0 and fresh_s > 0):
            raise ValueError(f"watchdog times must be > 0, got timeout {timeout_s}, fresh {fresh_s}")
        self.timeout_s, self.fresh_s = float(timeout_s), float(fresh_s)
        self.last_obs: float | None = None
        self.last_cmd: float | None = None
        self.first_obs: float | None = None

    def observed(self, now: float) -> None:
        self.last_obs = now
        if self.first_obs is None:
            self.first_obs = now

    def commanded(self, now: float) -> None:
        self.last_cmd = now

    def check(self, now: float, hold: str | None = None) -> dict:
        fresh = self.last_obs is not None and now - self.last_obs <= self.fresh_s
        since = self.last_cmd if self.last_cmd is not None else self.first_obs
        silent = None if since is None else now - since
        stalled = bool(fresh and hold is None and silent is not None and silent > self.timeout_s)
        return {"stalled": stalled, "inputs_fresh": bool(fresh), "since_command_s": silent,
                "hold": hold}


def chunk_age_is_late(age: int, replan_every: int) -> bool:
    """A *late tick*: the controller runs on no chunk (``age`` -1) or on a chunk at least
    ``replan_every`` ticks old.

    The policy is asked for a chunk at every ``replan_every``-th observation; the observation
    that tick ``k`` acts on is published one control period before it, so a policy that answers
    within one period makes every tick run on a chunk of age ``k % replan_every`` (0 ..
    ``replan_every - 1``). Age ``>= replan_every`` means a fresh chunk was due and had not
    arrived (the arm is following an older plan, or holding past the chunk's end)."""
    return age < 0 or age >= max(1, replan_every)


class TickMonitor:
    """Counts, over every control tick, the age of the chunk in use and the late ticks.

    ``record(age)`` once per tick with the index of the chunk point applied
    (:attr:`ChunkScheduler.last_index`: ticks since the chunk's observation, -1 when there is
    none). ``summary()`` is JSON-ready: ticks, late ticks, the longest run of consecutive late
    ticks, chunk-age percentiles and the age histogram."""

    def __init__(self, replan_every: int = 1):
        self.replan_every = max(1, int(replan_every))
        self.reset()

    def reset(self) -> None:
        self.ages: dict[int, int] = {}
        self.ticks = 0
        self.late = 0
        self.run = 0  # current run of consecutive late ticks
        self.longest_late_run = 0

    def record(self, age: int) -> bool:
        age = int(age)
        self.ages[age] = self.ages.get(age, 0) + 1
        self.ticks += 1
        late = chunk_age_is_late(age, self.replan_every)
        if late:
            self.late += 1
            self.run += 1
            self.longest_late_run = max(self.longest_late_run, self.run)
        else:
            self.run = 0
        return late

    def merge(self, other: "TickMonitor") -> None:
        for k, v in other.ages.items():
            self.ages[k] = self.ages.get(k, 0) + v
        self.ticks += other.ticks
        self.late += other.late
        self.longest_late_run = max(self.longest_late_run, other.longest_late_run)

    def percentile(self, q: float) -> int:
        """Chunk age at percentile ``q`` (0..100) over the ticks with a chunk; -1 if none had one."""
        items = sorted((k, v) for k, v in self.ages.items() if k >= 0)
        n = sum(v for _, v in items)
        if not n:
            return -1
        need, seen = q / 100.0 * n, 0
        for k, v in items:
            seen += v
            if seen >= need:
                return k
        return items[-1][0]

    def summary(self) -> dict:
        return {
            "ticks": self.ticks,
            "late": self.late,
            "late_fraction": self.late / self.ticks if self.ticks else 0.0,
            "longest_late_run": self.longest_late_run,
            "no_chunk": self.ages.get(-1, 0),
            "age_p50": self.percentile(50),
            "age_p99": self.percentile(99),
            "age_max": max(self.ages) if self.ages else -1,
            "replan_every": self.replan_every,
            "ages": {str(k): v for k, v in sorted(self.ages.items())},
        }
