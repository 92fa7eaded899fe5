"""``vla-rl-ros export-bag DATASET --out BAG``: episodes of a LeRobot dataset as one rosbag2 (MCAP)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from vla_rl_ros.cli.common import build_or_die, die, require_datasets
from vla_rl_ros.core.bags import BagExportOptions
from vla_rl_ros.core.config import add_fields, opt

HELP = "write episodes of a dataset as a rosbag2 (MCAP or SQLite 3) on the graph's topics"


@dataclass(frozen=True)
class ExportBagConfig(BagExportOptions):
    data: str = opt("", "LeRobot dataset folder", positional=True)
    out: str = opt("", "bag folder to create (must not exist)", required=True)
    episode_ids: str = opt("", "episodes to write: '0,3,5:9' (default: all)")


def add_arguments(p) -> None:
    add_fields(p, ExportBagConfig)


def main(args) -> int:
    from tqdm import tqdm

    from vla_rl_ros.core.bags import export_bag
    from vla_rl_ros.core.data.reader import episode_summaries, parse_episode_list

    cfg = build_or_die(ExportBagConfig, args)
    require_datasets([cfg.data])
    try:
        eps = parse_episode_list(cfg.episode_ids, len(episode_summaries(cfg.data)))
        opts = BagExportOptions(**{f.name: getattr(cfg, f.name) for f in fields(BagExportOptions)})
        with tqdm(total=len(eps), unit="episode", desc="export-bag") as bar:
            out = export_bag(cfg.data, cfg.out, eps, opts, progress=lambda i, n: bar.update(1))
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        die(str(e))
    print(f"{cfg.out}: {out['episodes']} episodes, {out['frames']} frames ({cfg.storage}) on "
          + ", ".join(out["topics"]))
    return 0
