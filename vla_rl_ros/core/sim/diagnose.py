"""Why episodes fail: a per-step watcher on the simulator's privileged state.

``vla-rl-ros evaluate --direct --diagnose`` attaches an :class:`EpisodeWatch` to every episode and
sorts each failure into one class, with the numbers that explain it:

``no grasp``        pick/place: the gripper never closed (closest approach of the grasp point to the
                    instructed cube, cm)
``missed grasp``    pick/place: the gripper closed without holding the cube (grasp point − cube at
                    the first close, cm, world x/y/z)
``wrong cube``      another cube was grasped, or moved further than the instructed one
``dropped``         the cube was held and lost before success
``not released``    place: still holding the cube at the time limit
``not lifted``      pick: holding the cube at the time limit, but not high enough
``off pad``         place: released outside the pad (cube − pad, cm)
``short push``      push: the cube moved less than required along the instructed direction (cm)
``lifted``          push: the cube was lifted / grasped instead of pushed

The classes are decided from what happened, in that order of precedence, by :func:`classify`
(pure, unit-tested); the watcher only records the trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_rl_ros.core.sim.tasks import CUBES, LIFTED_TOL, PUSH_DISTANCE

#: finger opening (m) below which the gripper counts as closed (open: 0.04, on a 4 cm cube: 0.02)
CLOSED = 0.03
#: ticks the cube must touch both fingers in a row to count as held (a graze for one tick while
#: the fingers close past it is a missed grasp, not a drop)
HELD_TICKS = 3

FAILURE_CLASSES = ("no grasp", "missed grasp", "wrong cube", "dropped", "not released", "off pad",
                   "not lifted", "short push", "lifted")


@dataclass
class EpisodeWatch:
    """Accumulates what :func:`classify` needs, one :meth:`step` per control tick."""

    family: str = ""
    target: str = ""
    pad: str | None = None
    init: dict = field(default_factory=dict)
    min_dist: float = float("inf")
    first_close: list | None = None  # grasp point − cube (m) at the first tick the gripper is closed
    held_ever: bool = False
    held_last: bool = False
    held_run: int = 0
    other_grasped: bool = False
    final: dict = field(default_factory=dict)

    def start(self, task, poses: dict) -> None:
        self.family, self.target, self.pad = task.family, task.spec.target, task.spec.pad
        self.init = {n: np.asarray(p[0], dtype=np.float64) for n, p in poses.items()}

    def step(self, ws) -> None:
        cube = ws.pos(self.target)
        d = np.asarray(ws.ee_pos) - cube
        self.min_dist = min(self.min_dist, float(np.linalg.norm(d)))
        held = self.target in ws.grasped
        if ws.gripper < CLOSED and self.first_close is None:
            self.first_close = d.tolist()
        self.held_run = self.held_run + 1 if held else 0
        self.held_ever |= self.held_run >= HELD_TICKS
        self.held_last = held
        self.other_grasped |= any(o != self.target and o in CUBES for o in ws.grasped)
        self.final = {n: np.asarray(p[0], dtype=np.float64) for n, p in ws.object_poses.items()}

    def summary(self, success: bool) -> tuple[str | None, dict]:
        return classify(self, success)


def _moved(watch: EpisodeWatch) -> dict:
    return {n: float(np.linalg.norm(watch.final[n] - watch.init[n])) for n in CUBES if n in watch.final}


def classify(w: EpisodeWatch, success: bool) -> tuple[str | None, dict]:
    """(failure class or None for a success, numbers in cm)."""
    if success:
        return None, ({"first_close_cm": [round(100.0 * float(x), 1) for x in w.first_close]}
                      if w.first_close is not None and w.family != "push" else {})
    moved = _moved(w)
    cm = lambda v: [round(100.0 * float(x), 1) for x in np.atleast_1d(v)]  # noqa: E731
    other = max((m, n) for n, m in moved.items() if n != w.target) if len(moved) > 1 else (0.0, None)
    if w.other_grasped or (other[0] > 0.03 and other[0] > moved.get(w.target, 0.0)):
        return "wrong cube", {"cube": other[1], "moved_cm": cm(other[0])[0]}
    cube, cube0 = w.final[w.target], w.init[w.target]
    if w.family == "push":
        if w.held_ever or cube[2] - cube0[2] > LIFTED_TOL:
            return "lifted", {"lift_cm": cm(cube[2] - cube0[2])[0]}
        return "short push", {"moved_cm": cm(abs(cube[1] - cube0[1]))[0], "needed_cm": cm(PUSH_DISTANCE)[0]}
    if not w.held_ever:
        if w.first_close is None:
            return "no grasp", {"closest_cm": cm(w.min_dist)[0]}
        return "missed grasp", {"offset_cm": cm(w.first_close), "closest_cm": cm(w.min_dist)[0]}
    if w.family == "place":
        if w.held_last:
            return "not released", {}
        pad = w.final[w.pad]
        return "off pad", {"offset_cm": cm(cube[:2] - pad[:2])}
    if not w.held_last:
        return "dropped", {}
    return "not lifted", {"lift_cm": cm(cube[2] - cube0[2])[0]}


def failure_table(results) -> str:
    """Counts of each failure class per task family (``results``: EpisodeResult with ``failure``),
    and the median missed-grasp offset."""
    fams = sorted({r.family for r in results})
    classes = [c for c in FAILURE_CLASSES if any(r.failure == c for r in results)]
    head = ["family", "episodes", "failed"] + classes
    lines = [head]
    for f in fams + ["overall"]:
        rs = [r for r in results if f == "overall" or r.family == f]
        cells = [f, str(len(rs)), str(sum(not r.success for r in rs))]
        cells += [str(sum(r.failure == c for r in rs)) for c in classes]
        lines.append(cells)
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w[i]) for i, c in enumerate(x)) for x in lines]
    out.insert(1, "-" * len(out[0]))
    off = np.array([r.detail["offset_cm"] for r in results if r.failure == "missed grasp"])
    if len(off):
        med = np.median(np.abs(off), axis=0)
        out.append(f"missed grasps: median |grasp point - cube| at the first close x {med[0]:.1f} cm, "
                   f"y {med[1]:.1f} cm, z {med[2]:.1f} cm")
    return "\n".join(out)


def plot_failures(results, path) -> None:
    """Left: failure classes per family (stacked bars). Right: grasp point − cube (x, y) at the
    first close of the gripper, successes vs missed grasps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = sorted({r.family for r in results})
    classes = [c for c in FAILURE_CLASSES if any(r.failure == c for r in results)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    bottom = np.zeros(len(fams))
    ok = np.array([sum(r.success for r in results if r.family == f) for f in fams], dtype=float)
    a.bar(fams, ok, color="tab:green", label="success")
    bottom += ok
    palette = dict(zip(FAILURE_CLASSES, ("tab:blue", "tab:orange", "tab:purple", "tab:red", "tab:brown",
                                         "tab:pink", "tab:gray", "tab:olive", "tab:cyan")))
    for c in classes:
        n = np.array([sum(r.failure == c for r in results if r.family == f) for f in fams], dtype=float)
        a.bar(fams, n, bottom=bottom, label=c, color=palette[c])
        bottom += n
    a.set_ylabel("episodes")
    a.legend(fontsize=7)
    a.set_title("outcome per task family", fontsize=10)
    miss = np.array([r.detail["offset_cm"][:2] for r in results if r.failure == "missed grasp"]).reshape(-1, 2)
    hit = np.array([r.detail["first_close_cm"][:2] for r in results
                    if r.detail and "first_close_cm" in r.detail]).reshape(-1, 2)
    if len(hit):
        b.scatter(hit[:, 0], hit[:, 1], s=14, c="tab:green", label="successful episodes")
    if len(miss):
        b.scatter(miss[:, 0], miss[:, 1], s=18, c="tab:red", marker="x", label="missed grasp")
    b.axhline(0, c="k", lw=0.5)
    b.axvline(0, c="k", lw=0.5)
    b.set_xlabel("x: grasp point - cube (cm, away from the robot)")
    b.set_ylabel("y (cm)")
    b.set_aspect("equal", adjustable="datalim")
    b.legend(fontsize=7)
    b.set_title("grasp point relative to the cube when the gripper first closes", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
