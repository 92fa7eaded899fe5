"""Versioned checkpoint formats (issue 21, item 6): a loader reads its own format at versions up
to its own, and refuses a newer one with a message that says to upgrade, on the real shipped
checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vla_rl_ros.core.formats import check_format, parse_format
from vla_rl_ros.core.policy.checkpoint import FORMAT, CheckpointError, load_checkpoint

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "vla_bc_v4"


def test_parse_and_check():
    assert parse_format("vla_rl_ros.policy/1") == ("vla_rl_ros.policy", 1)
    assert check_format("a.b/1", "a.b/2", "thing", "p") == 1
    assert check_format("a.b/2", "a.b/2", "thing", "p") == 2
    with pytest.raises(ValueError, match="newer vla_rl_ros.*upgrade"):
        check_format("a.b/3", "a.b/2", "thing", "p")
    with pytest.raises(ValueError, match="is not a a.b"):
        check_format("c.d/1", "a.b/2", "thing", "p")
    with pytest.raises(ValueError, match="unknown format"):
        check_format("a.b", "a.b/2", "thing", "p")
    with pytest.raises(ValueError, match="no \"format\" field.*backend: lerobot"):
        check_format(None, "a.b/2", "policy checkpoint", "p")


def _copy_with_format(tmp_path, fmt) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(SHIPPED, dst)
    cfg = json.loads((dst / "config.json").read_text())
    if fmt is None:
        cfg.pop("format")
    else:
        cfg["format"] = fmt
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_the_shipped_checkpoint_loads_and_a_newer_format_is_refused(tmp_path):
    name, version = parse_format(FORMAT)
    model, cfg = load_checkpoint(SHIPPED)
    assert cfg["format"] == FORMAT and model is not None
    newer = _copy_with_format(tmp_path, f"{name}/{version + 1}")
    with pytest.raises(CheckpointError, match=r"newer vla_rl_ros .*upgrade"):
        load_checkpoint(newer, verify=False)
    shutil.rmtree(newer)
    with pytest.raises(CheckpointError, match="is not a vla_rl_ros policy checkpoint"):
        load_checkpoint(_copy_with_format(tmp_path, None), verify=False)
