"""Ray actors (``core/parallel.ordered_map``, ``--ray``): the same episodes as the serial loop, in
order; the checkpoint reaches the actors through the object store; a clear error without Ray."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from vla_rl_ros.core.parallel import RAY_MISSING, ordered_map, pack_dir, unpack_dir
from vla_rl_ros.core.paths import checkpoint_or_default

ray = pytest.importorskip("ray", reason="Ray (requirements/extras.txt) is not installed")

SEEDS = [1000, 1001, 1002, 1003]
MAX_STEPS = 30


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the module; the runs below join it instead of starting their own."""
    from vla_rl_ros.core.parallel import ensure_ray

    yield ensure_ray("local", 2)
    ray.shutdown()


def test_evaluate_on_ray_actors_equals_the_serial_loop(local_ray):
    from vla_rl_ros.core.policy.evaluate import evaluate, evaluate_parallel
    from vla_rl_ros.core.policy.factory import open_runtime
    from vla_rl_ros.core.policy.runtime import Observation
    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    ckpt = checkpoint_or_default("")  # the shipped checkpoint (models/vla_bc_v4)
    rt = open_runtime(ckpt, backend="onnxruntime", joint_names=PANDA.joint_names, threads=1)
    size = rt.cfg.image_size
    with PandaWorld(SimConfig(image_width=size, image_height=size, cameras=rt.cameras, max_steps=MAX_STEPS,
                              renderer="tiny")) as world:
        act = lambda o: rt.infer(Observation(o["images"], o["state"], o["instruction"]))  # noqa: E731
        serial = evaluate(world, act, SEEDS)
    seen = []
    on_ray = evaluate_parallel(ckpt, SEEDS, workers=2, max_steps=MAX_STEPS, ray_address="local",
                               progress=lambda res, dt: seen.append(len(res)))
    assert seen == [1, 2, 3, 4]
    assert [r.seed for r in on_ray] == SEEDS  # in order, whichever actor finished first
    assert [r.__dict__ for r in on_ray] == [r.__dict__ for r in serial]  # steps, return, moved cube: exact


def test_direct_collection_on_ray_actors_records_the_serial_episodes(local_ray, tmp_path):
    from vla_rl_ros.core.collect import DirectCollectConfig, collect_direct, expert_episode
    from vla_rl_ros.core.data import schema as S
    from vla_rl_ros.core.data.reader import episode_frames
    from vla_rl_ros.core.sim.expert import ScriptedExpert
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    cfg = DirectCollectConfig(seed=7, expert_noise=0.03, image_size=32, max_steps=MAX_STEPS)
    res = collect_direct(str(tmp_path / "ds"), 2, cfg, workers=2, ray_address="local")
    assert res["saved"] == 2 and res["failed"] == 0
    with PandaWorld(SimConfig(image_width=32, image_height=32, renderer="tiny", max_steps=MAX_STEPS)) as w:
        ex = ScriptedExpert(noise_std=cfg.expert_noise, seed=cfg.seed)
        serial = [expert_episode(w, ex, seed, None, cfg.horizon)[0] for seed in (7, 8)]
        ex.close()
    for ep, frames in enumerate(serial):
        d = episode_frames(str(tmp_path / "ds"), ep)
        assert len(d[S.STATE]) == len(frames)
        for key in (S.ACTION, S.ACTION_MEAN, S.STATE, S.image_key("front")):
            np.testing.assert_array_equal(d[key], np.stack([f[key] for f in frames]), err_msg=f"episode {ep} {key}")


def _square(x):
    return x * x


def _noop(**kw):
    pass


def test_shipped_directory_round_trips(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "w.bin").write_bytes(b"\x00\x01")
    (tmp_path / "a" / "sub" / "c.json").write_text("{}")
    files = pack_dir(str(tmp_path / "a"))
    assert files == {"sub/c.json": b"{}", "w.bin": b"\x00\x01"}
    unpack_dir(files, str(tmp_path / "b"))
    assert pack_dir(str(tmp_path / "b")) == files
    with pytest.raises(ValueError, match="escapes"):
        unpack_dir({"../x": b""}, str(tmp_path / "c"))


_SEEN = {}


def _record(ckpt, other):
    from pathlib import Path

    _SEEN.update(ckpt=ckpt, files=sorted(p.name for p in Path(ckpt).iterdir()), other=other)


def test_an_actor_opens_its_own_copy_of_the_shipped_checkpoint():
    from pathlib import Path

    from vla_rl_ros.core.parallel import _Actor

    ckpt = checkpoint_or_default("")
    actor = _Actor(_record, {"ckpt": ckpt, "other": 3}, _square, {"ckpt": pack_dir(ckpt)})  # as Ray builds it
    assert _SEEN["ckpt"] != ckpt and _SEEN["other"] == 3  # a temporary copy, the other arguments as given
    assert _SEEN["files"] == sorted(p.name for p in Path(ckpt).iterdir())
    assert actor.run(4) == 16
    actor.close()
    assert not Path(_SEEN["ckpt"]).exists()


def test_without_ray_the_error_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RuntimeError, match="pip install -c requirements/constraints.txt ray=="):
        list(ordered_map(_noop, {}, _square, [1, 2], workers=1, ray_address="local"))
    assert "--ray needs the optional extra" in RAY_MISSING
    from vla_rl_ros.cli import build_parser
    from vla_rl_ros.cli.evaluate import main

    with pytest.raises(SystemExit) as e:  # before any episode or checkpoint is read
        main(build_parser().parse_args(["evaluate", "--direct", "--ray", "--episodes", "1"]))
    assert e.value.code == 2 and "--ray needs the optional extra" in capsys.readouterr().err


def test_ray_option_alone_means_a_local_ray_and_needs_direct():
    from vla_rl_ros.cli import build_parser
    from vla_rl_ros.cli.collect import CollectConfig
    from vla_rl_ros.core.config import ConfigError, build

    ap = build_parser()
    assert ap.parse_args(["evaluate", "--direct", "--ray"]).ray == "local"
    assert ap.parse_args(["evaluate", "--direct", "--ray", "auto"]).ray == "auto"
    assert ap.parse_args(["compare", "A", "B", "--ray=10.0.0.2:6379"]).ray == "10.0.0.2:6379"
    assert ap.parse_args(["improve"]).ray is None
    with pytest.raises(ConfigError, match="--ray needs --direct"):
        build(CollectConfig, ap.parse_args(["collect", "--out", "/tmp/x", "--ray"]))
