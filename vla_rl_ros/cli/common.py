"""Shared by the verbs: errors, output folders, success tables, the ROS options. No rclpy."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from vla_rl_ros.core.config import ConfigError, build, opt


def die(msg: str, code: int = 2) -> None:
    """Print ``error: msg`` and exit with ``code`` (2: bad input)."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def build_or_die(cls, args, **extra):
    """The verb's config from the parsed options, validated; a bad value is a clear error."""
    try:
        return build(cls, args, **extra)
    except (ConfigError, ValueError) as e:
        die(str(e))


def require_ray(address: str | None) -> None:
    """``--ray`` given without the optional extra installed: a clear error (exit 2) before any work."""
    if address is None:
        return
    from vla_rl_ros.core.parallel import import_ray

    try:
        import_ray()
    except RuntimeError as e:
        die(str(e))


def check_writable_dir(path: str) -> Path:
    """Create ``path`` if needed and prove we can write into it; a clear error otherwise."""
    p = Path(path).expanduser().resolve()
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        die(f"output folder {str(p)!r} is not writable: {e.strerror or e}")
    return p


def require_datasets(paths) -> None:
    for d in paths:
        if not (Path(d) / "meta" / "info.json").exists():
            die(f"{d!r} is not a LeRobot dataset (no meta/info.json)")


@dataclass(frozen=True)
class RosOptions:
    """Options of every verb that starts or talks to a ROS graph."""

    domain_id: int | None = opt(None, "ROS_DOMAIN_ID for the graph (default: the environment's)")
    log_dir: str = opt("", "write each node's output here")


# ----------------------------------------------------------------------------- tables
def success_table(summaries: list[dict]) -> str:
    """Success per task family (and overall) from ``episode_summaries`` rows."""
    fams: dict[str, list[dict]] = {}
    for s in summaries:
        fams.setdefault(str(s.get("family") or "?"), []).append(s)
    rows = [("family", "episodes", "success", "rate", "mean len", "mean return")]

    def row(name, items):
        n = len(items)
        k = sum(1 for s in items if s.get("success"))
        mean_len = sum(int(s.get("length", 0)) for s in items) / max(n, 1)
        mean_ret = sum(float(s.get("return", 0.0)) for s in items) / max(n, 1)
        return (name, str(n), str(k), f"{100.0 * k / max(n, 1):.1f}%", f"{mean_len:.1f}", f"{mean_ret:.2f}")

    for fam in sorted(fams):
        rows.append(row(fam, fams[fam]))
    rows.append(row("overall", summaries))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def family_of(task: str) -> str:
    from vla_rl_ros.core.sim.tasks import parse_instruction

    try:
        return parse_instruction(task).family
    except ValueError:
        return "?"


def dataset_summaries(root: str) -> list[dict]:
    from vla_rl_ros.core.data.reader import episode_summaries

    rows = episode_summaries(root)
    for r in rows:
        r.setdefault("family", family_of(str(r.get("task", ""))))
    return rows


def print_dataset_result(out: Path, before: int, seconds: float, extra: str = "") -> list[dict]:
    """The dataset's size, this run's rate and its success table; returns this run's rows."""
    rows = dataset_summaries(str(out))
    new_rows = rows[before:]
    print(f"\ndataset: {out}  ({len(rows)} episodes, {sum(int(r['length']) for r in rows)} frames)")
    print(f"this run: {len(new_rows)} episodes in {seconds:.1f}s "
          f"({60.0 * len(new_rows) / max(seconds, 1e-9):.1f} episodes/min{extra})\n")
    if new_rows:
        print(success_table(new_rows))
    return new_rows
