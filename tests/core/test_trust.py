"""Which checkpoints a running policy may load (core/policy/trust.py): allowed directories with
symlinks resolved, and HMAC signatures when a key is configured; wired into HotSwapper as the
policy node wires it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.core.test_policy import small_model
from vla_rl_ros.core.policy.checkpoint import CheckpointError, save_checkpoint
from vla_rl_ros.core.policy.runtime import HotSwapper, PolicyRuntime
from vla_rl_ros.core.policy.trust import (
    SIGNATURE_FILE,
    UntrustedCheckpoint,
    WeightsTrust,
    default_allowed_dirs,
    read_key,
    sign_checkpoint,
    trusted_loader,
)
from vla_rl_ros.core.robot import PANDA

KEY = b"0123456789abcdef-test-key"


@pytest.fixture
def dirs(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    other.mkdir()
    return allowed, other


def test_inside_is_accepted_outside_and_escaping_links_are_not(dirs, tmp_path):
    allowed, other = dirs
    inside = save_checkpoint(small_model(), allowed / "v1", version=1)
    outside = save_checkpoint(small_model(), other / "v2", version=2)
    trust = WeightsTrust.build([str(allowed)])
    assert trust.check(str(inside)) == inside.resolve()
    (allowed / "sub").mkdir()
    assert trust.check(str(allowed / "sub" / ".." / "v1")) == inside.resolve()
    with pytest.raises(UntrustedCheckpoint, match="outside the allowed"):
        trust.check(str(outside))
    (allowed / "link").symlink_to(outside)  # planted inside, pointing out
    with pytest.raises(UntrustedCheckpoint, match="resolves to"):
        trust.check(str(allowed / "link"))
    with pytest.raises(UntrustedCheckpoint, match="outside the allowed"):
        trust.check(str(allowed / ".." / "elsewhere" / "v2"))
    for bad, why in (("", "empty"), ("a\x00b", "NUL"), ("x" * 5000, "5000 characters"),
                     (str(tmp_path / "missing"), "does not exist"), (str(inside / "config.json"), "not a checkpoint")):
        with pytest.raises(UntrustedCheckpoint, match=why):
            trust.check(bad)
    assert issubclass(UntrustedCheckpoint, CheckpointError)  # the swapper reports it as a refusal


def test_signature_required_when_a_key_is_configured(dirs, tmp_path):
    allowed, _ = dirs
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    ckpt = save_checkpoint(small_model(), allowed / "v1", version=1)
    trust = WeightsTrust.build([str(allowed)], str(key_file))
    with pytest.raises(UntrustedCheckpoint, match="not signed"):
        trust.check(str(ckpt))
    sign_checkpoint(ckpt, b"another key of enough length")
    with pytest.raises(UntrustedCheckpoint, match="does not match"):
        trust.check(str(ckpt))
    sign_checkpoint(ckpt, read_key(key_file))
    assert trust.check(str(ckpt)) == ckpt.resolve()
    # the signature covers the manifest, which covers every file: a re-saved checkpoint (new
    # weights, new manifest) under the old signature is refused
    (ckpt / SIGNATURE_FILE).rename(tmp_path / "old.sig")
    save_checkpoint(small_model(seed=3), allowed / "v1", version=1)
    (tmp_path / "old.sig").rename(ckpt / SIGNATURE_FILE)
    with pytest.raises(UntrustedCheckpoint, match="does not match"):
        trust.check(str(ckpt))
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    with pytest.raises(ValueError, match="at least 16"):
        WeightsTrust.build([str(allowed)], str(short))
    with pytest.raises(ValueError, match="unreadable"):
        read_key(tmp_path / "none")


def test_default_dirs_are_the_start_checkpoints_folder_and_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = save_checkpoint(small_model(), tmp_path / "models" / "v1", version=1)
    assert default_allowed_dirs(start) == (str((tmp_path / "models").resolve()), str((tmp_path / "runs").resolve()))


def test_the_swapper_refuses_untrusted_weights_and_keeps_running(dirs, tmp_path):
    allowed, other = dirs
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    start = save_checkpoint(small_model(), allowed / "v1", version=1)
    rt = PolicyRuntime(start, backend="torch", joint_names=PANDA.joint_names)
    events = []
    sw = HotSwapper(rt, on_event=events.append, loader=trusted_loader(WeightsTrust.build([str(allowed)], str(key_file))))
    unsigned = save_checkpoint(small_model(seed=1), allowed / "v2", version=2)
    outside = save_checkpoint(small_model(seed=2), other / "v3", version=3)
    sign_checkpoint(outside, KEY)  # signed, but outside the allowed folder
    for p in (unsigned, outside):
        sw.request(str(p), block=True)
    assert [e.event for e in events] == ["refused", "refused"], events
    assert "not signed" in events[0].reason and "outside the allowed" in events[1].reason
    assert sw.active().version == 1
    sign_checkpoint(unsigned, KEY)
    sw.request(str(unsigned), block=True)
    assert events[-1].event == "loaded", events[-1]
    t0 = time.monotonic()
    while sw.active().version != 2 and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert sw.active().version == 2


def test_sign_verb_signs_verified_checkpoints_only(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    ckpt = save_checkpoint(small_model(), tmp_path / "v1", version=1)
    cmd = [sys.executable, "-m", "vla_rl_ros.cli", "sign", str(ckpt), "--key-file", str(key_file)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "signed" in r.stdout, r.stderr
    assert WeightsTrust.build([str(tmp_path)], str(key_file)).check(str(ckpt)) == ckpt.resolve()
    with open(ckpt / "model.safetensors", "r+b") as f:  # corrupt: not signed
        f.seek(200)
        f.write(b"\xff" * 8)
    (ckpt / SIGNATURE_FILE).unlink()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not signed" in r.stderr and not (ckpt / SIGNATURE_FILE).exists(), (r.stdout, r.stderr)
