"""TensorBoard event files of training runs (``core/scalars.py``): what is written reads back
exactly (float32, as TensorBoard stores it), and real ``train-bc`` / ``train-rl`` runs write their
own ``history`` to ``<out>/tb``."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from tests.core.test_policy import synthetic_bc_episodes
from tests.core.test_rl import lagging_data  # noqa: F401  (the module-scoped fixture: real explored episodes)
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.core.scalars import TB_DIR, ScalarLog, read_scalars


def f32(x) -> float:
    """What an event file's ``simple_value`` holds for ``x``."""
    return float(np.float32(x))


def assert_series(got: list, want: list) -> None:
    """Same steps, same values (float32 of the run's float64, within 1e-6)."""
    assert [s for s, _ in got] == [s for s, _ in want], (got, want)
    np.testing.assert_allclose([v for _, v in got], [f32(v) for _, v in want], rtol=0, atol=1e-6)


def test_written_scalars_read_back_exactly_and_non_numbers_are_skipped(tmp_path):
    with ScalarLog(tmp_path) as log:
        assert log.add("train/loss", 0.123456789, 0)
        assert not log.add("train/loss", float("nan"), 25)  # skipped
        assert log.add("train/loss", np.float64(0.5), 50)
        assert not log.add("train/loss", float("inf"), 75)
        assert log.add_dict("rl", {"epoch": 1, "ess": 0.75, "kl_behaviour": np.float32(0.01), "note": "x",
                                   "missing": None, "flag": True, "nan": float("nan")}, 1, skip=("epoch",)) == 2
    got = read_scalars(tmp_path / TB_DIR)
    assert set(got) == {"train/loss", "rl/ess", "rl/kl_behaviour"}
    assert_series(got["train/loss"], [(0, 0.123456789), (50, 0.5)])
    assert got["rl/ess"] == [(1, 0.75)]
    assert_series(got["rl/kl_behaviour"], [(1, 0.01)])
    # a second run into the same folder (a resumed run) adds its own file; both are read, in order
    with ScalarLog(tmp_path) as log:
        log.add("train/loss", 0.25, 100)
    assert [s for s, _ in read_scalars(tmp_path / TB_DIR)["train/loss"]] == [0, 50, 100]


def test_a_corrupt_record_is_refused_and_an_off_log_writes_nothing(tmp_path):
    with ScalarLog(tmp_path / "a") as log:
        log.add("val/loss", 0.5, 1)
    (f,) = (tmp_path / "a" / TB_DIR).iterdir()
    data = bytearray(f.read_bytes())
    data[-6] ^= 0xFF  # inside the last record's data: its CRC no longer matches
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        read_scalars(tmp_path / "a" / TB_DIR)
    with ScalarLog(tmp_path / "b", enabled=False) as log:
        assert not log.add("val/loss", 0.5, 1)
    assert not (tmp_path / "b").exists()


def test_a_scalar_failure_never_fails_the_run_and_warns_once(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="vla_rl_ros.core.scalars"):
        with ScalarLog(tmp_path / "file") as log:  # <file>/tb cannot be created
            assert not log.add("train/loss", 1.0, 0)
            assert not log.add("train/loss", 2.0, 1)
    warnings = [r for r in caplog.records if "TensorBoard scalars off" in r.getMessage()]
    assert len(warnings) == 1


def test_train_bc_writes_its_history_as_event_files(tmp_path):
    from vla_rl_ros.core.policy.bc import BCConfig, train_bc

    cfg = BCConfig(data=("unused",), out=str(tmp_path / "bc"), steps=60, batch_size=8, lr=2e-3, warmup=5,
                   val_every=30, seed=1, threads=1, horizon=4, d_model=32, augment_shift=0,
                   export_onnx=False)
    train_bc(cfg, synthetic_bc_episodes(), ["front"], PANDA.joint_names, progress=False)
    history = json.loads((tmp_path / "bc" / "history.json").read_text())
    got = read_scalars(tmp_path / "bc" / TB_DIR)
    assert set(got) == {"train/loss", "train/lr", "val/loss"}
    for tag, key in (("train/loss", "train_loss"), ("train/lr", "lr"), ("val/loss", "val_loss")):
        want = [(h["step"], h[key]) for h in history if key in h]
        assert len(want) >= 2
        assert_series(got[tag], want)
    assert [s for s, _ in got["train/loss"]] == [0, 25, 50] and [s for s, _ in got["val/loss"]] == [30, 60]
    # --no-tensorboard: the same run writes no event file
    train_bc(dataclasses.replace(cfg, out=str(tmp_path / "off"), steps=2, tensorboard=False),
             synthetic_bc_episodes(), ["front"], PANDA.joint_names, progress=False)
    assert (tmp_path / "off" / "history.json").is_file() and not (tmp_path / "off" / TB_DIR).exists()


def test_train_rl_writes_every_epoch_of_its_history(lagging_data, tmp_path):  # noqa: F811
    from vla_rl_ros.core.rl.config import RLConfig
    from vla_rl_ros.core.rl.trainer import train_rl

    ds, init = lagging_data
    cfg = RLConfig(data=(str(ds),), init=str(init), out=str(tmp_path / "rl"), epochs=3, batch_size=16, lr=5e-4,
                   baseline="group", value_steps=5, threads=1, export_onnx=False, target_kl=1e9)
    res = train_rl(cfg, progress=False)
    history = res["history"]
    assert len(history) == 3 and history == json.loads((tmp_path / "rl" / "history.json").read_text())
    got = read_scalars(tmp_path / "rl" / TB_DIR)
    keys = [k for k in history[0] if k != "epoch"]
    assert {"policy_loss", "clip_fraction", "ess", "kl_behaviour", "value_loss"} <= set(keys)
    assert set(got) == {f"rl/{k}" for k in keys if np.isfinite(history[0][k])}
    for k in keys:
        if f"rl/{k}" in got:
            assert_series(got[f"rl/{k}"], [(h["epoch"], h[k]) for h in history])
