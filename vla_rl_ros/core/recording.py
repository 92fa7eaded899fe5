"""Assemble per-control-step frames from asynchronously arriving pieces (ROS-free).

The trajectory logger receives, on separate topics and in no guaranteed order, for every control
tick ``k`` whose observation is stamped ``s_k``:

* the robot state and one image per camera, stamped ``s_k``;
* the reference the controller applied over the interval ``k -> k+1``, stamped ``s_k`` and
  naming the chunk point it came from (``"<chunk_stamp_ns>:<index>"``, or ``"…:hold"``/``"hold"``);
* the reward/success/done of that transition, stamped ``s_k`` (LeRobot's ``next.*``);
* the executed and mean chunks, stamped with the observation they were computed from.

A frame is complete when state, every image, reference and reward for one stamp are in. The
assembler keeps incomplete pieces until the episode ends; what is still incomplete then is
counted as dropped (never filled with made-up data).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def step_log_prob(action, mean, sigma, lower=None, upper=None) -> float:
    """log π(executed step) summed over joints: truncated-normal density within [lower, upper]
    (what :class:`vla_rl_ros.core.rl.exploration.Explorer` samples), plain Gaussian without limits.
    Joints with σ = 0 were executed as μ (not explored) and are not part of the likelihood."""
    from vla_rl_ros.core.rl.exploration import LOG_SQRT_2PI, truncnorm_logpdf

    a, m, s = (np.asarray(v, dtype=np.float64) for v in (action, mean, sigma))
    on = s > 0
    a, m, s = a[on], m[on], s[on]
    if lower is not None and upper is not None:
        lo, hi = np.asarray(lower, dtype=np.float64)[on], np.asarray(upper, dtype=np.float64)[on]
        return float(np.sum(truncnorm_logpdf(a, np.clip(m, lo, hi), s, lo, hi)))
    return float(np.sum(-0.5 * ((a - m) / s) ** 2 - np.log(s) - LOG_SQRT_2PI))


@dataclass
class _Pending:
    state: np.ndarray | None = None
    images: dict = field(default_factory=dict)
    action: np.ndarray | None = None
    ref: str | None = None
    reward: tuple | None = None
    env: np.ndarray | None = None


@dataclass
class ChunkRecord:
    chunk: np.ndarray  # (H, dof)
    policy_version: int = 0
    sigma: np.ndarray | None = None  # (H, dof) or None for a deterministic chunk


@dataclass
class AssembledEpisode:
    episode: int
    task: str
    frames: list
    dropped: int
    meta: dict


def parse_reference(ref: str) -> tuple[int, int]:
    """``"<chunk_ns>:<i>"`` -> (chunk_ns, i); holds -> (chunk_ns or 0, -1)."""
    if not ref or ref == "hold":
        return 0, -1
    head, _, tail = ref.partition(":")
    try:
        chunk_ns = int(head)
    except ValueError:
        return 0, -1
    if tail == "hold":
        return chunk_ns, -1
    try:
        return chunk_ns, int(tail)
    except ValueError:
        return chunk_ns, -1


class EpisodeAssembler:
    """Collects pieces by stamp and turns the ones of an episode into LeRobot frames.

    Episodes are delimited by stamps, not by when their events arrive: an episode owns the
    pieces stamped at or after its start stamp and before the next episode's start stamp. So a
    first observation that overtakes its episode's start event, or an end event handled after
    the next episode began, loses nothing.
    """

    def __init__(self, cameras: list[str], dof: int, max_chunks: int = 512, max_pending: int = 20000,
                 lower=None, upper=None, env_size: int = 0):
        self.cameras = list(cameras)
        self.dof = dof
        # > 0: every frame also needs the privileged observation.environment_state (simulation)
        self.env_size = int(env_size)
        # joint limits: the explorer samples a Gaussian *truncated* to them, and the logged
        # log-likelihood is that truncated density (plain Gaussian when no limits are given)
        self.lower = None if lower is None else np.asarray(lower, dtype=np.float64)
        self.upper = None if upper is None else np.asarray(upper, dtype=np.float64)
        self.max_chunks = max_chunks
        self.max_pending = max_pending
        self.episodes: dict[int, tuple[str, dict, int]] = {}  # open episodes: task, meta, start
        self.pending: dict[int, _Pending] = {}
        self.executed: dict[int, ChunkRecord] = {}
        self.means: dict[int, ChunkRecord] = {}
        self.sigmas: dict[int, np.ndarray] = {}  # chunk stamp -> σ (H, dof) from the explorer

    # ------------------------------------------------------------------ lifecycle
    @property
    def active(self) -> bool:
        return bool(self.episodes)

    @property
    def episode(self) -> int | None:
        return max(self.episodes) if self.episodes else None

    def start(self, episode: int, task: str, meta: dict | None = None, start_ns: int = 0) -> None:
        self.episodes[episode] = (task, dict(meta or {}), int(start_ns))

    def _slot(self, stamp: int) -> _Pending:
        slot = self.pending.get(stamp)
        if slot is None:
            slot = self.pending[stamp] = _Pending()
            if len(self.pending) > self.max_pending:
                del self.pending[min(self.pending)]
        return slot

    # ------------------------------------------------------------------ pieces
    def add_state(self, stamp: int, q: np.ndarray) -> None:
        self._slot(stamp).state = np.asarray(q, dtype=np.float32)

    def add_image(self, camera: str, stamp: int, img: np.ndarray) -> None:
        if camera in self.cameras:
            self._slot(stamp).images[camera] = img

    def add_reference(self, stamp: int, target: np.ndarray, ref: str) -> None:
        slot = self._slot(stamp)
        slot.action = np.asarray(target, dtype=np.float32)
        slot.ref = ref

    def add_env(self, stamp: int, env: np.ndarray) -> None:
        env = np.asarray(env, dtype=np.float32).reshape(-1)
        if len(env) != self.env_size:
            raise ValueError(f"environment state has {len(env)} values, expected {self.env_size}")
        self._slot(stamp).env = env

    def add_reward(self, stamp: int, reward: float, success: bool, done: bool) -> None:
        self._slot(stamp).reward = (float(reward), bool(success), bool(done))

    def _remember(self, store: dict, stamp: int, rec: ChunkRecord) -> None:
        store[stamp] = rec
        while len(store) > self.max_chunks:
            del store[min(store)]

    def add_executed_chunk(self, stamp: int, rec: ChunkRecord) -> None:
        self._remember(self.executed, stamp, rec)

    def add_mean_chunk(self, stamp: int, rec: ChunkRecord) -> None:
        self._remember(self.means, stamp, rec)

    def add_sigma(self, stamp: int, sigma: np.ndarray) -> None:
        """σ of the exploration noise of the chunk stamped ``stamp`` (same stamp as its μ)."""
        self.sigmas[stamp] = np.asarray(sigma, dtype=np.float64)
        while len(self.sigmas) > self.max_chunks:
            del self.sigmas[next(iter(self.sigmas))]

    # ------------------------------------------------------------------ output
    def _complete(self, p: _Pending) -> bool:
        return (
            p.state is not None
            and p.action is not None
            and p.reward is not None
            and all(c in p.images for c in self.cameras)
            and (self.env_size == 0 or p.env is not None)
        )

    def _frame(self, p: _Pending) -> dict:
        chunk_ns, index = parse_reference(p.ref or "")
        executed = self.executed.get(chunk_ns)
        mean_rec = self.means.get(chunk_ns)
        mean = p.action
        sigma = np.zeros(self.dof, dtype=np.float32)
        if mean_rec is not None:
            row = index if index >= 0 else len(mean_rec.chunk) - 1
            if row < len(mean_rec.chunk):
                mean = mean_rec.chunk[row].astype(np.float32)
            sig = self.sigmas.get(chunk_ns, mean_rec.sigma)
            if sig is not None and index >= 0 and row < len(sig):
                sigma = np.asarray(sig[row], dtype=np.float32)
        version = executed.policy_version if executed is not None else (
            mean_rec.policy_version if mean_rec is not None else 0
        )
        log_prob = 0.0
        if index >= 0 and np.any(sigma > 0):
            log_prob = step_log_prob(p.action, mean, sigma, self.lower, self.upper)
        reward, success, done = p.reward
        frame = {f"observation.images.{c}": p.images[c] for c in self.cameras}
        if self.env_size:
            frame["observation.environment_state"] = p.env
        frame.update(
            {
                "observation.state": p.state,
                "action": p.action,
                "rl.action_mean": np.asarray(mean, dtype=np.float32),
                "rl.sigma": sigma,
                "rl.log_prob": log_prob,
                "rl.chunk_id": int(chunk_ns),
                "rl.chunk_index": int(index),
                "rl.policy_version": int(version),
                "next.reward": reward,
                "next.done": done,
                "next.success": success,
            }
        )
        return frame

    def end(self, info: dict | None = None, episode: int | None = None) -> AssembledEpisode | None:
        """Close ``episode`` (default: the newest open one): its frames in stamp order up to the
        first ``done``; incomplete ticks are counted as dropped."""
        if not self.episodes:
            return None
        ep = self.episode if episode is None else episode
        if ep not in self.episodes:
            return None
        task, meta, lo = self.episodes.pop(ep)
        later = [s for _, _, s in self.episodes.values() if s > lo]
        hi = min(later) if later else None
        frames, dropped, used = [], 0, []
        for stamp in sorted(k for k in self.pending if k >= lo and (hi is None or k < hi)):
            p = self.pending[stamp]
            used.append(stamp)
            if self._complete(p):
                frames.append(self._frame(p))
                if p.reward[2]:
                    break
            elif p.reward is not None or p.action is not None:
                dropped += 1  # a tick that really happened but lost a piece
        for stamp in used:
            del self.pending[stamp]
        for stamp in [k for k in self.pending if k < lo]:  # older leftovers can never be used
            del self.pending[stamp]
        if frames:  # the last recorded frame closes the episode
            frames[-1]["next.done"] = True
        meta.update(info or {})
        meta["dropped_frames"] = dropped
        return AssembledEpisode(ep, task, frames, dropped, meta)


class TickAnchors:
    """pairing ticks (a real robot): give each chunk's decision the observation it was computed from.

    A frame per control tick holds the newest image and joint state at that tick, but the policy
    computed the tick's chunk from an earlier image (the chunk's stamp) and the joint state newest
    when that image arrived. The RL update reads a decision's observation from its anchor frame
    (``index`` ticks before the first frame of the chunk, :mod:`vla_rl_ros.core.rl.samples`), so on
    the first tick of each new chunk the anchor frame's observation is replaced by the chunk's own:
    the image stamped like the chunk (other cameras: the frame nearest that stamp) and the state
    newest when it arrived. Without it the update's ratio at the start is not 1 (median log-ratio
    1.4 nats on the robot-graph test's episode, against ~0 with exact sim pairing).
    """

    def __init__(self, cameras: list[str], keep_images: int = 64, keep_ticks: int = 16):
        self.cameras = list(cameras)
        self.keep_images = int(keep_images)
        self.images: dict[str, dict[int, tuple[np.ndarray, np.ndarray | None]]] = {c: {} for c in self.cameras}
        self.ticks: list[int] = []
        self.keep_ticks = int(keep_ticks)
        self.last_chunk: int | None = None
        self.counts = {"anchored": 0, "unanchored": 0}

    def image(self, camera: str, stamp: int, img: np.ndarray, state: np.ndarray | None) -> None:
        """An image as it arrived, with the newest joint state at that moment."""
        store = self.images.get(camera)
        if store is None:
            return
        store[int(stamp)] = (img, None if state is None else np.asarray(state, dtype=np.float32))
        while len(store) > self.keep_images:
            del store[min(store)]

    def new_episode(self) -> None:
        """Ticks of an earlier episode are never an anchor."""
        self.ticks.clear()
        self.last_chunk = None

    def tick(self, tick_stamp: int, chunk_stamp: int | None, index: int):
        """Record a tick; on the first tick of a new chunk return ``(anchor tick stamp, images,
        state)`` to write into the anchor frame, or None (the same chunk, a hold, or the chunk's
        observation no longer held: counted as unanchored)."""
        self.ticks.append(int(tick_stamp))
        del self.ticks[: -self.keep_ticks]
        if chunk_stamp is None or index < 0 or chunk_stamp == self.last_chunk:
            return None
        self.last_chunk = chunk_stamp
        got = self.images[self.cameras[0]].get(int(chunk_stamp)) if self.cameras else None
        if got is None or got[1] is None or index >= len(self.ticks):
            self.counts["unanchored"] += 1
            return None
        images = {self.cameras[0]: got[0]}
        for c in self.cameras[1:]:
            if not self.images[c]:
                self.counts["unanchored"] += 1
                return None
            near = min(self.images[c], key=lambda s: abs(s - chunk_stamp))
            images[c] = self.images[c][near][0]
        self.counts["anchored"] += 1
        return self.ticks[-1 - index], images, got[1]
