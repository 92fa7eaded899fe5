"""``vla-rl-ros import-bag BAG --out DATASET``: a rosbag2 (MCAP or SQLite 3) of image and joint-state
topics -> a LeRobot dataset, resampled at a fixed rate, episodes from markers or gaps."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from vla_rl_ros.cli.common import build_or_die, die
from vla_rl_ros.core.bags import BagImportOptions
from vla_rl_ros.core.config import add_fields, opt

HELP = "convert a rosbag2 (MCAP / SQLite 3) of camera + joint-state topics into a LeRobot dataset"


@dataclass(frozen=True)
class ImportBagConfig(BagImportOptions):
    bag: str = opt("", "rosbag2 folder (or a single .mcap / .db3 file)", positional=True)
    out: str = opt("", "LeRobot dataset folder to create or append to", required=True)
    mapping: str = opt("", "YAML file of these options (cameras, joint_states, action, fps, ...); "
                       "options given on the command line win")


def add_arguments(p) -> None:
    add_fields(p, ImportBagConfig)


def _with_mapping(args) -> dict:
    """The parsed options, with a mapping file's values where the command line kept the default."""
    import yaml

    given = dict(vars(args))
    if not given.get("mapping"):
        return given
    try:
        doc = yaml.safe_load(Path(given["mapping"]).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        die(f"mapping {given['mapping']!r}: {e}")
    if not isinstance(doc, dict):
        die(f"mapping {given['mapping']!r}: expected a mapping of option: value")
    known = {f.name: f for f in fields(BagImportOptions)}
    unknown = sorted(set(doc) - set(known))
    if unknown:
        die(f"mapping {given['mapping']!r}: unknown options {unknown} (known: {sorted(known)})")
    for k, v in doc.items():
        if given.get(k) == known[k].default:
            given[k] = tuple(v) if isinstance(v, list) else v
    return given


def main(args) -> int:
    from tqdm import tqdm

    from vla_rl_ros.cli.common import dataset_summaries, success_table
    from vla_rl_ros.core.bags import import_bag

    cfg = build_or_die(ImportBagConfig, _with_mapping(args))
    opts = BagImportOptions(**{f.name: getattr(cfg, f.name) for f in fields(BagImportOptions)})
    try:
        with tqdm(unit="episode", desc="import-bag") as bar:
            def progress(i, n):
                bar.total = n
                bar.update(1)
            rep = import_bag(cfg.bag, cfg.out, opts, progress=progress)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    print(f"{cfg.out}: {rep.episodes} episodes, {rep.frames} frames at {cfg.fps:g} Hz "
          f"(episodes from {rep.source}, action from the {rep.action_from})")
    for why in rep.skipped:
        print(f"  skipped: {why}")
    if rep.episodes:
        print(success_table(dataset_summaries(cfg.out)))
    return 0 if rep.episodes else 1
