"""How much does exploration move the grasp? From an explored dataset (direct collection, which
logs the simulator's positions), per scene rolled out several times (``improve --group-size``):
the spread of the grasp point − instructed cube offset at the first close of the gripper, and
how many scenes had both successes and failures (the only ones that carry an RL signal).

    .venv/bin/python bench/grasp_spread.py runs/rl_g_s0/data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vla_rl_ros.core.data import schema as S  # noqa: E402
from vla_rl_ros.core.data.reader import episode_summaries, iter_episode_frames  # noqa: E402
from vla_rl_ros.core.sim.diagnose import CLOSED  # noqa: E402
from vla_rl_ros.core.sim.tasks import OBJECTS, parse_instruction  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="LeRobot dataset from `improve --direct` / `collect --direct --policy`")
    args = ap.parse_args()
    try:
        meta = {r["episode_index"]: r.get("meta") or {} for r in episode_summaries(args.data)}
        frames = iter_episode_frames(args.data, keys=[S.ENV_STATE, S.STATE, S.SUCCESS])
        groups: dict = {}
        for e, d in frames:
            spec = parse_instruction(str(d["task"]))
            m = meta.get(e, {})
            if spec.family == "push" or m.get("seed") is None:
                continue
            env, q = np.asarray(d[S.ENV_STATE]), np.asarray(d[S.STATE])
            closed = np.flatnonzero(q[:, -1] < CLOSED)
            if not len(closed):
                continue
            i, k = OBJECTS.index(spec.target), closed[0]
            off = env[k, -3:] - env[k, 3 * i : 3 * i + 3]
            groups.setdefault((m["seed"], m.get("policy_version")), []).append((off, bool(np.any(d[S.SUCCESS]))))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {args.data}: {exc} (needs a dataset with observation.environment_state)", file=sys.stderr)
        return 2
    sd, mean, mixed, n = [], [], 0, 0
    for v in groups.values():
        if len(v) < 3:
            continue
        n += 1
        o = np.array([x[0] for x in v])[:, :2]
        ok = [x[1] for x in v]
        sd.append(o.std(0, ddof=1))
        mean.append(np.abs(o.mean(0)))
        mixed += 0 < sum(ok) < len(ok)
    if not n:
        print("error: no pick/place scene rolled out 3+ times with a grasp attempt", file=sys.stderr)
        return 2
    sd, mean = 100 * np.median(sd, axis=0), 100 * np.median(mean, axis=0)
    print(f"{n} pick/place scenes with >= 3 rollouts that closed the gripper")
    print(f"grasp point - cube at the first close, spread within a scene (median sd): x {sd[0]:.2f} cm, y {sd[1]:.2f} cm")
    print(f"|scene-mean offset| (median): x {mean[0]:.2f} cm, y {mean[1]:.2f} cm")
    print(f"scenes with both successes and failures: {mixed} of {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
