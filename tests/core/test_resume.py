"""Where a restarted trainer resumes: the newest round whose checkpoint verifies."""

from __future__ import annotations

from tests.core.test_policy import small_model
from vla_rl_ros.core.policy.checkpoint import save_checkpoint
from vla_rl_ros.core.rl.resume import resume_point


def test_resume_point_skips_incomplete_and_corrupt_rounds(tmp_path):
    assert resume_point(tmp_path / "none") == (0, None, [])
    good = save_checkpoint(small_model(), tmp_path / "round_2" / "checkpoint", version=3)
    bad = save_checkpoint(small_model(), tmp_path / "round_3" / "checkpoint", version=4)
    (bad / "model.safetensors").write_bytes(b"\x00" * 10)  # corrupt after the fact
    (tmp_path / "round_4" / ".checkpoint.tmpabc").mkdir(parents=True)  # killed mid-save
    (tmp_path / "round_x").mkdir()
    last, newest, removed = resume_point(tmp_path)
    assert last == 4 and newest == str(good)
    assert removed == [str(tmp_path / "round_4" / ".checkpoint.tmpabc")]
    assert not (tmp_path / "round_4" / ".checkpoint.tmpabc").exists()

