"""``vla-rl-ros summary DIR``: success per task family of a dataset."""

from __future__ import annotations

from vla_rl_ros.cli.common import dataset_summaries, require_datasets, success_table

HELP = "success per task family of a dataset"


def add_arguments(p) -> None:
    p.add_argument("data", help="LeRobot dataset folder")


def main(args) -> int:
    require_datasets([args.data])
    rows = dataset_summaries(args.data)
    print(f"{args.data}: {len(rows)} episodes")
    print(success_table(rows))
    return 0
