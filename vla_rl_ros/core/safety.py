"""The safety layer between the policy's chunks and a robot's controller (ROS-free, pure).

Every command to a controller goes through :meth:`SafetyLayer.command`. What it does with a chunk,
in this order, and why:

1. **Not finite, wrong shape** → refused. NaN never reaches a controller.
2. **Positions** → clipped to the profile's limits, the arm's pulled in by ``position_margin``. A target
   outside them is never sent; clipping (not refusing) keeps the arm moving along the rest of the
   chunk, and the count of clipped points is reported.
3. **Continuity**: the first point farther than ``max_first_jump`` from the measured state →
   refused (the policy is not answering this robot's state; nothing sensible can be sent).
   **Workspace** (when the profile has kinematics: a URDF and a tip link): the chunk is cut
   before its first point whose tip leaves the profile's workspace box, refused if that is the
   first point (joint limits cannot express "not into the table").
4. **Velocity and acceleration** → the chunk's *time* is stretched by the smallest factor that
   brings every segment within the limits (velocity scales with 1/s, acceleration with 1/s²), so
   the arm follows the policy's path more slowly instead of a distorted one; a chunk that would
   need more than ``max_time_scale`` is refused (the policy asked for something far beyond the arm).
5. The points carry **velocities** (central differences; the last point's is zero, so a chunk that
   is not replaced ends at rest) and the trajectory has a zero stamp: a JointTrajectoryController
   starts it on arrival, so it can never be "a trajectory that ends in the past".

Around that, a state machine: ``disabled`` (dry run: the command is computed and reported, never
sent; the start state on robot graphs) → ``enabled`` ↔ ``holding`` (an operator's hold, or a
watchdog: stale joint states, images or chunks) and ``estopped`` (latched; released only by
clearing the e-stop and enabling again). Leaving ``enabled`` sends one hold command (an empty
trajectory: a JointTrajectoryController holds its current position).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.core.config import opt, require
from vla_rl_ros.core.robot_profile import RobotProfile

STATES = ("disabled", "enabled", "holding", "estopped")
#: watchdog inputs: their age beyond the configured timeout holds the arm
WATCHED = ("joint_states", "image", "chunk")


@dataclass(frozen=True)
class SafetyConfig:
    """The safety layer's settings (``safety_node``'s parameters, ``SafetyNodeConfig``, extend them)."""

    position_margin: float = opt(0.02, "arm targets are clipped this far inside each position limit (rad; the gripper "
                                       "to its limits)")
    max_first_jump: float = opt(0.3, "the first point farther than this from the measured state: chunk refused (rad)")
    max_time_scale: float = opt(4.0, "a chunk that needs its time stretched more than this to respect the velocity "
                                     "and acceleration limits is refused")
    velocity_fraction: float = opt(1.0, "use this fraction of the profile's velocity and acceleration limits")
    state_timeout_s: float = opt(0.2, "joint states older than this: hold (no motion command on stale states)")
    image_timeout_s: float = opt(0.5, "no image for this long: hold (0: not watched)")
    max_clock_offset_s: float = opt(0.5, "joint state stamps farther than this from the local clock (an unsynchronised "
                                         "robot computer): hold until they agree (s)")
    tracking_error_max: float = opt(0.15, "an arm joint commanded to move more than this (rad, path length) over "
                                          "tracking_error_s that moved less than 15% of it is not following (an "
                                          "obstacle, a faulted drive): hold until enabled again")
    tracking_error_s: float = opt(1.0, "the window of the tracking check (s)")
    start_tolerance: float = opt(0.0, "enable is refused while an arm joint is farther than this from the profile's "
                                      "home pose (rad; the robot graph: 0.6; call move_to_start first); 0: anywhere")
    move_speed: float = opt(0.2, "move_to_start: this fraction of the velocity and acceleration limits")
    chunk_timeout_s: float = opt(1.0, "no chunk from the policy for this long (it died or stalled): hold")

    def validate(self) -> "SafetyConfig":
        """Raise ``ConfigError`` (a ``ValueError``) naming the first bad value; returns self."""
        for name in ("position_margin", "max_first_jump", "state_timeout_s", "chunk_timeout_s", "image_timeout_s",
                     "max_clock_offset_s", "tracking_error_max", "tracking_error_s"):
            v = getattr(self, name)
            require(math.isfinite(v) and v >= 0, f"{name} must be finite and >= 0, got {v}")
        require(self.max_time_scale >= 1 and math.isfinite(self.max_time_scale),
                f"max_time_scale must be >= 1, got {self.max_time_scale}")
        require(0 < self.velocity_fraction <= 1, f"velocity_fraction must be in (0, 1], got {self.velocity_fraction}")
        require(0 < self.move_speed <= 1, f"move_speed must be in (0, 1], got {self.move_speed}")
        require(math.isfinite(self.start_tolerance) and self.start_tolerance >= 0, "start_tolerance must be >= 0")
        return self


@dataclass
class Command:
    """A trajectory the controller will accept: ``positions`` (H, dof) in the profile's joint
    order, ``velocities`` (H, dof), ``times`` (H,) seconds from its arrival, strictly increasing."""

    positions: np.ndarray
    velocities: np.ndarray
    times: np.ndarray
    time_scale: float
    clipped: int
    truncated: bool = False


class Refused(ValueError):
    """A chunk the layer will not send; the message says why."""


@dataclass
class SafetyLayer:
    profile: RobotProfile
    config: SafetyConfig = field(default_factory=SafetyConfig)
    state: str = "disabled"
    hold_reasons: set = field(default_factory=set)
    counters: dict = field(default_factory=lambda: {"sent": 0, "refused": 0, "clipped_points": 0, "scaled": 0,
                                                    "workspace_cut": 0, "dry_run": 0, "holds": 0, "estops": 0})
    last_refusal: str = ""
    #: the tip's position (3,) in the workspace box's frame for a joint vector in the profile's
    #: order (``core/kinematics.UrdfChain``), or None: no workspace check
    tip: object = None

    def __post_init__(self):
        self.config.validate()
        self.tracking = TrackingMonitor(self.config.tracking_error_max, self.config.tracking_error_s)
        p = self.profile
        m = np.full(p.dof, self.config.position_margin)
        if p.gripper_joint:  # the gripper opening (m) is clamped by its own controller: no rad margin
            m[-1] = 0.0
        self.lo = np.minimum(p.lower + m, (p.lower + p.upper) / 2)
        self.hi = np.maximum(p.upper - m, (p.lower + p.upper) / 2)
        self.vmax = p.velocity * self.config.velocity_fraction
        self.amax = p.acceleration * self.config.velocity_fraction

    # ------------------------------------------------------------------ state machine
    def enable(self, on: bool, q=None) -> tuple[bool, str]:
        """The operator's enable (True) / disable (False). Refused while the e-stop is latched, and
        (``start_tolerance`` > 0) while the measured ``q`` is far from the home pose or unknown."""
        if not on:
            self.state = "disabled"
            self.hold_reasons.discard("operator")
            return True, "disabled: commands are computed, none is sent (dry run)"
        if self.state == "estopped":
            return False, "e-stop is latched: clear /vla/safety/estop (publish false) first"
        tol = self.config.start_tolerance
        if tol > 0:
            if q is None:
                return False, "no joint state yet: cannot check the start pose"
            off = np.abs(np.asarray(q, dtype=np.float64) - self.profile.home)[: len(self.profile.arm_joints)]
            if np.max(off) > tol:
                j = int(np.argmax(off))
                return False, (f"{self.profile.arm_joints[j]} is {off[j]:.2f} rad from the start pose (limit {tol:g}): "
                               "call move_to_start first")
        self.hold_reasons.discard("operator")
        self.hold_reasons -= {r for r in self.hold_reasons if r.startswith("tracking error")}
        self.tracking = TrackingMonitor(self.config.tracking_error_max, self.config.tracking_error_s)
        self.state = "enabled"
        return True, "enabled" + (f" (holding: {', '.join(sorted(self.hold_reasons))})" if self.hold_reasons else "")

    def hold(self) -> bool:
        """The operator's hold; returns True if the arm was being commanded (a hold must be sent)."""
        was = self.commanding()
        self.hold_reasons.add("operator")
        if self.state == "enabled":
            self.state = "holding"
        self.counters["holds"] += 1
        return was

    def estop(self, on: bool) -> bool:
        """Latch (True) or clear (False) the e-stop; returns True when a hold must be sent now.
        Clearing leaves the layer disabled: motion needs a new enable."""
        if on:
            was = self.state != "estopped"
            self.state = "estopped"
            self.counters["estops"] += int(was)
            return True
        if self.state == "estopped":
            self.state = "disabled"
        return False

    def watch(self, ages: dict) -> bool:
        """Watchdog: ``ages`` {input: seconds since its last good message, None if never}. Inputs
        past their timeout add a hold reason, fresh ones clear theirs (the arm resumes on its own
        when a stale input returns). Returns True when this call started a hold (send one)."""
        limits = {"joint_states": self.config.state_timeout_s, "image": self.config.image_timeout_s,
                  "chunk": self.config.chunk_timeout_s}
        was = self.commanding()
        for k, limit in limits.items():
            if k not in ages or limit <= 0:
                continue
            age = ages[k]
            if age is None or age > limit:
                self.hold_reasons.add(f"stale {k}")
            else:
                self.hold_reasons.discard(f"stale {k}")
        self._sync()
        return was and not self.commanding()

    def set_reason(self, reason: str, on: bool) -> bool:
        """Add (``on``) or clear a hold reason of the caller's own (e.g. a clock offset); returns
        True when this started a hold (send one)."""
        was = self.commanding()
        (self.hold_reasons.add if on else self.hold_reasons.discard)(reason)
        self._sync()
        return was and not self.commanding()

    def track(self, now: float, q) -> bool:
        """Tracking check of the arm joints (call with every measured state ``q``, the profile's
        order, while commanding; the gripper is left out: closing on an object stops it short).
        Returns True when it started a hold (send one); the reason stays until the next enable."""
        if not self.commanding():
            return False
        err = self.tracking.check(now, np.asarray(q, dtype=np.float64)[: len(self.profile.arm_joints)])
        if err is None:
            return False
        j, e = err
        return self.set_reason(f"tracking error: {self.profile.joints[j]} moved {e:.3f} rad less than commanded",
                               True)

    def _sync(self) -> None:
        if self.state in ("enabled", "holding"):
            self.state = "holding" if self.hold_reasons else "enabled"

    def commanding(self) -> bool:
        return self.state == "enabled" and not self.hold_reasons

    # ------------------------------------------------------------------ one chunk
    def move_to(self, q_now, target, dt: float) -> Command:
        """A slow joint-space move from the measured ``q_now`` to ``target`` (clipped to the
        limits) at ``move_speed`` of the velocity and acceleration limits: a straight line in joint
        space, accelerating and braking (a trapezoid), points every ``dt``."""
        q = np.clip(np.asarray(q_now, dtype=np.float64), self.lo, self.hi)
        goal = np.clip(np.asarray(target, dtype=np.float64), self.lo, self.hi)
        delta = goal - q
        vmax, amax = self.vmax * self.config.move_speed, self.amax * self.config.move_speed
        # s(τ) = 2τ² then 1 - 2(1-τ)²: the largest ds/dτ is 2 and d²s/dτ² is 4, so a duration T
        # keeps every joint within 2|Δ|/T ≤ vmax and 4|Δ|/T² ≤ amax
        d = np.abs(delta)
        T = float(max(np.max(2 * d / vmax), np.max(2 * np.sqrt(d / amax)), dt))
        n = max(1, int(math.ceil(T / dt)))
        tau = np.arange(1, n + 1) / n
        frac = np.where(tau < 0.5, 2 * tau**2, 1 - 2 * (1 - tau) ** 2)
        slope = np.where(tau < 0.5, 4 * tau, 4 * (1 - tau))
        positions = q[None] + frac[:, None] * delta[None]
        velocities = slope[:, None] * delta[None] / T
        return Command(positions=positions, velocities=velocities, times=T * tau, time_scale=1.0, clipped=0)

    def check(self, chunk, dt: float, q_now, dq_now=None) -> Command:
        """The command for ``chunk`` ((H, dof) targets in the profile's joint order, one every
        ``dt`` s from now) starting at the measured ``q_now`` (moving at ``dq_now``; None: at
        rest, the conservative case for the first point's acceleration); raises :class:`Refused`.
        Pure: the state machine is not consulted (see :meth:`command`)."""
        x = np.asarray(chunk, dtype=np.float64)
        q = np.asarray(q_now, dtype=np.float64)
        dq = np.zeros_like(q) if dq_now is None else np.asarray(dq_now, dtype=np.float64)
        dof = self.profile.dof
        if x.ndim != 2 or x.shape[1] != dof or len(x) == 0:
            raise Refused(f"chunk shape {x.shape}, expected (H>=1, {dof})")
        if q.shape != (dof,):
            raise Refused(f"measured state shape {q.shape}, expected ({dof},)")
        if dq.shape != q.shape:
            raise Refused(f"measured velocity shape {dq.shape}, expected ({dof},)")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(q)) and np.all(np.isfinite(dq))):
            raise Refused("non-finite chunk or state")
        if not (math.isfinite(dt) and dt > 0):
            raise Refused(f"point spacing {dt} s")
        jump = np.abs(x[0] - q)
        if np.max(jump) > self.config.max_first_jump:
            j = int(np.argmax(jump))
            raise Refused(f"first point {jump[j]:.3f} from the measured {self.profile.joints[j]} "
                          f"(limit {self.config.max_first_jump})")
        clipped = np.clip(x, self.lo, self.hi)
        n_clipped = int(np.sum(np.any(clipped != x, axis=1)))
        truncated = False
        if self.tip is not None:
            p = self.profile
            for k, row in enumerate(clipped):
                pos = np.asarray(self.tip(row))
                if np.any(pos < p.workspace_min) or np.any(pos > p.workspace_max):
                    if k == 0:
                        raise Refused(f"the first point's tip {np.round(pos, 3).tolist()} is outside the workspace box "
                                      f"{p.workspace_min.tolist()}..{p.workspace_max.tolist()}")
                    clipped, truncated = clipped[:k], True
                    break
            x = x[: len(clipped)]
        path = np.vstack([np.clip(q, self.lo, self.hi)[None], clipped])
        seg = np.diff(path, axis=0)  # (H, dof): segment i ends at point i
        scale = max(1.0, float(np.max(np.abs(seg) / (dt * self.vmax))))  # velocity scales with 1/s
        while True:  # acceleration: 1/s² for the chunk's own changes, 1/s for the measured velocity's
            vel = seg / (dt * scale)
            acc = np.diff(np.vstack([dq[None], vel]), axis=0) / (dt * scale)
            excess = float(np.max(np.abs(acc) / self.amax))
            if excess <= 1.0 + 1e-9 or scale > self.config.max_time_scale:
                break
            scale *= min(max(math.sqrt(excess), 1.02), 2.0)
        if scale > self.config.max_time_scale:
            raise Refused(f"needs more than {self.config.max_time_scale:g}x its time to respect the velocity / "
                          "acceleration limits")
        step = dt * scale
        times = step * np.arange(1, len(x) + 1)
        v = np.zeros_like(clipped)
        if len(x) > 1:
            v[:-1] = (path[2:] - path[:-2]) / (2 * step)
        v = np.clip(v, -self.vmax, self.vmax)
        return Command(positions=clipped, velocities=v, times=times, time_scale=scale, clipped=n_clipped,
                       truncated=truncated)

    def command(self, chunk, dt: float, q_now, dq_now=None) -> tuple[Command | None, str]:
        """(command to send or None, why). Counts what happened; a dry run computes and reports."""
        try:
            cmd = self.check(chunk, dt, q_now, dq_now)
        except Refused as e:
            self.counters["refused"] += 1
            self.last_refusal = str(e)
            return None, f"refused: {e}"
        self.counters["clipped_points"] += cmd.clipped
        self.counters["workspace_cut"] += int(cmd.truncated)
        self.counters["scaled"] += int(cmd.time_scale > 1.0)
        if self.state == "disabled":
            self.counters["dry_run"] += 1
            return None, "dry run (disabled)"
        if not self.commanding():
            return None, f"{self.state}: " + ", ".join(sorted(self.hold_reasons) or ["e-stop"])
        self.counters["sent"] += 1
        return cmd, "sent"

    def status(self) -> dict:
        return {"state": self.state, "commanding": self.commanding(), "hold_reasons": sorted(self.hold_reasons),
                "last_refusal": self.last_refusal, **self.counters}


#: an arm joint that moved less than this fraction of what it was commanded to, over the window, is not
#: following (a chunk time-stretched 4x, the most the layer allows, still achieves ~1/4 of its first step per tick)
MIN_FOLLOW_RATIO = 0.15


class TrackingMonitor:
    """Is the arm following what it is sent? Over the last ``window_s``, per arm joint, the
    commanded motion (the sum of each sent trajectory's first step from the state it was sent
    at) against the achieved motion (the path length of the measured states). A joint commanded
    more than ``min_motion`` that achieved less than ``MIN_FOLLOW_RATIO`` of it is not following
    (an obstacle, a faulted drive, an inactive controller): ``check`` returns (joint, commanded −
    achieved). Path lengths, not displacements, so a policy that moves back and forth is not
    flagged, and replanning from the measured state every tick (which bounds any position error
    to one step) does not hide a blocked arm. Times from one monotonic clock."""

    def __init__(self, min_motion: float, window_s: float):
        self.min_motion, self.window_s = float(min_motion), float(window_s)
        self.sends: deque = deque()  # (t, |first step| (n,))
        self.states: deque = deque()  # (t, q (n,))
        self.started: float | None = None

    def sent(self, t0: float, q0, times, positions) -> None:
        """A trajectory just sent: ``positions`` (H, n) from the measured ``q0`` (n,)."""
        step = np.abs(np.asarray(positions, dtype=np.float64)[0] - np.asarray(q0, dtype=np.float64))
        self.sends.append((float(t0), step))
        self.started = float(t0) if self.started is None else self.started

    def clear(self) -> None:
        self.sends.clear()
        self.states.clear()
        self.started = None

    def check(self, now: float, q) -> tuple[int, float] | None:
        q = np.asarray(q, dtype=np.float64)
        self.states.append((float(now), q))
        lo = now - self.window_s
        while self.sends and self.sends[0][0] < lo:
            self.sends.popleft()
        while len(self.states) > 1 and self.states[1][0] < lo:
            self.states.popleft()
        if self.started is None or now - self.started < self.window_s or not self.sends or self.min_motion <= 0:
            return None  # not commanded for a whole window yet
        commanded = np.sum([st for _, st in self.sends], axis=0)
        qs = np.array([x for _, x in self.states])
        achieved = np.sum(np.abs(np.diff(qs, axis=0)), axis=0) if len(qs) > 1 else np.zeros_like(commanded)
        bad = (commanded > self.min_motion) & (achieved < MIN_FOLLOW_RATIO * commanded)
        if not np.any(bad):
            return None
        j = int(np.argmax(np.where(bad, commanded - achieved, -np.inf)))
        return j, float(commanded[j] - achieved[j])
