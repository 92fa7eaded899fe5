"""Where a restarted trainer picks up: the newest *complete* round under its output folder.

A round writes ``<out_root>/round_<n>/`` and, last, its checkpoint by temp folder + rename with a
checksummed manifest (``core/policy/checkpoint.save_checkpoint``), announcing it only after. A
trainer killed mid-update therefore leaves at most a round folder without a checkpoint and a
``.checkpoint.tmp*`` folder — never a checkpoint that fails its manifest, and never an
announcement of one. :func:`resume_point` skips such rounds, starts the next one after the highest
round folder (a folder is never reused), and removes the temp folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROUND_PREFIX = "round_"


def round_number(p: Path) -> int | None:
    s = p.name[len(ROUND_PREFIX):]
    return int(s) if p.name.startswith(ROUND_PREFIX) and s.isdigit() else None


def resume_point(out_root: str | Path) -> tuple[int, str | None, list[str]]:
    """(the highest round number with a folder (0: none), the newest round checkpoint that
    verifies against its manifest or None, the temp folders removed)."""
    from vla_rl_ros.core.policy.checkpoint import CheckpointError, verify_files

    root = Path(out_root)
    if not root.is_dir():
        return 0, None, []
    rounds = sorted((n, p) for p in root.iterdir() if p.is_dir() and (n := round_number(p)) is not None)
    removed = []
    for _, p in rounds:
        for tmp in p.glob(".checkpoint.tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(str(tmp))
    newest = None
    for _, p in reversed(rounds):
        ck = p / "checkpoint"
        try:
            verify_files(ck)
        except (CheckpointError, OSError, ValueError):
            continue
        newest = str(ck)
        break
    return (rounds[-1][0] if rounds else 0), newest, removed
