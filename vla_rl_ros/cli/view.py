"""``vla-rl-ros view DATASET [--episode N] [--out DIR] [--rerun/--no-rerun]``: one episode to look at.

Writes an MP4 of the cameras (step, reward, success under the image), a contact sheet, an overview
(the sheet over plots of joints, action vs commanded mean, noise, sigma, reward) and, with rerun-sdk
installed, a Rerun recording (.rrd); see ``core/data/view.py``.
"""

from __future__ import annotations

import argparse

from vla_rl_ros.cli.common import build_or_die, die, require_datasets
from vla_rl_ros.core.config import add_fields

HELP = "write a video, contact sheet, plots and a Rerun recording of one episode of a dataset"


def add_arguments(p) -> None:
    from vla_rl_ros.core.data.view import ViewConfig

    add_fields(p, ViewConfig, exclude=("rerun",))
    p.add_argument("--rerun", action=argparse.BooleanOptionalAction, default=None,
                   help="write a Rerun recording (.rrd) [default: when rerun-sdk is installed]")


def main(args) -> int:
    from vla_rl_ros.core.data.view import ViewConfig, ViewError, view_episode

    cfg = build_or_die(ViewConfig, args)
    require_datasets([cfg.data])
    try:
        written = view_episode(cfg)
    except ViewError as e:
        die(str(e))
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
