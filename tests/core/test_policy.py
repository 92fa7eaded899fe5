"""The VLA policy core: checkpoints, backends, runtime input guards, BC training."""

import json

import numpy as np
import pytest
import torch

from vla_rl_ros.core.policy.backends import (
    OnnxRuntimeBackend,
    TorchBackend,
    engine_cache_key,
    example_inputs,
    export_onnx,
    make_backend,
    parity,
    tensorrt_available,
)
from vla_rl_ros.core.policy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vla_rl_ros.core.policy.model import Normalization, PolicyConfig, VLAPolicy
from vla_rl_ros.core.robot import PANDA

SMALL = dict(image_size=32, d_model=32, n_heads=2, prefix_layers=1, head_layers=1, horizon=4,
             cnn_channels=(8, 16, 16), joint_names=tuple(PANDA.joint_names))


def small_model(seed=0) -> VLAPolicy:
    torch.manual_seed(seed)
    cfg = PolicyConfig(**SMALL)
    norm = Normalization(PANDA.home.tolist(), [0.5] * 8, [0.0] * 8, [0.1] * 8)
    return VLAPolicy(cfg, norm).eval()


@pytest.fixture
def ckpt(tmp_path):
    return save_checkpoint(small_model(), tmp_path / "ckpt", version=3,
                           instructions={"pick up the red cube": np.ones(384, np.float32).tolist()})


def test_action_head_is_bidirectional_and_one_pass():
    m = small_model()
    imgs, state, lang = example_inputs(m, batch=2)
    out = m(imgs, state, lang)
    assert out.shape == (2, 4, 8)
    # perturbing the LAST action query changes the FIRST token's output: no causal mask
    with torch.no_grad():
        base = m.normalized_delta(imgs, state, lang)
        m.head.queries[0, -1] += torch.randn(m.cfg.d_model)  # (a constant shift would vanish in LayerNorm)
        moved = m.normalized_delta(imgs, state, lang)
    assert (moved[:, 0] - base[:, 0]).abs().max() > 1e-5


def test_checkpoint_round_trip(ckpt):
    m2, cfg = load_checkpoint(ckpt, joint_names=PANDA.joint_names)
    m1 = small_model()
    x = example_inputs(m1, 2)
    torch.testing.assert_close(m1(*x), m2(*x))
    assert cfg["version"] == 3 and "pick up the red cube" in cfg["instructions"]


def test_checkpoint_refusals(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="trained for joints"):
        load_checkpoint(ckpt, joint_names=["j1", "j2"])
    # no normalisation statistics
    cfg = json.loads((ckpt / "config.json").read_text())
    bad = dict(cfg)
    bad.pop("normalization")
    (ckpt / "config.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="manifest says|sha256"):  # the manifest notices the edit
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="normalisation"):
        load_checkpoint(ckpt, verify=False)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    # truncated weights
    w = ckpt / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="bytes"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(ckpt, verify=False)


def test_nan_weights_are_refused(tmp_path):
    m = small_model()
    with torch.no_grad():
        m.head.out.weight[0, 0] = float("nan")
    p = save_checkpoint(m, tmp_path / "nan")
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(p)


def test_onnx_parity_dynamic_batch_and_backend_choice(tmp_path):
    m = small_model()
    path = export_onnx(m, tmp_path / "m.onnx")
    tb, ob = TorchBackend(m), OnnxRuntimeBackend(path, threads=1)
    for batch in (1, 3):
        assert parity(tb, ob, example_inputs(m, batch, seed=batch)) <= 1e-4
    assert make_backend("auto", m, path).name in ("onnxruntime", "tensorrt")
    assert make_backend("torch", m, path).name == "torch"
    assert make_backend("auto", m, None).name == "torch"  # no ONNX file: falls back
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("tflite", m, path)


def test_tensorrt_is_behind_an_import_check(tmp_path):
    ok, why = tensorrt_available()
    if not ok:
        from vla_rl_ros.core.policy.backends import BackendUnavailable

        with pytest.raises(BackendUnavailable):
            make_backend("tensorrt", small_model(), tmp_path / "x.onnx")
    p = tmp_path / "a.onnx"
    p.write_bytes(b"abc")
    k1 = engine_cache_key(p, "NVIDIA H100", "10.3", True)
    assert k1 != engine_cache_key(p, "NVIDIA H100", "10.4", True)
    assert k1 != engine_cache_key(p, "NVIDIA H200", "10.3", True)
    assert k1 != engine_cache_key(p, "NVIDIA H100", "10.3", False)
    p.write_bytes(b"abd")
    assert k1 != engine_cache_key(p, "NVIDIA H100", "10.3", True)


def test_runtime_guards_bad_observations(ckpt):
    from vla_rl_ros.core.policy.runtime import Observation, ObservationError, PolicyRuntime

    rt = PolicyRuntime(ckpt, backend="torch", joint_names=PANDA.joint_names)
    img = np.zeros((32, 32, 3), np.uint8)
    good = Observation({"front": img}, PANDA.home.copy(), "pick up the red cube")
    chunk = rt.infer(good)
    assert chunk.shape == (4, 8) and np.all(np.isfinite(chunk))
    bad = [
        (Observation({}, PANDA.home, "pick up the red cube"), "missing camera"),
        (Observation({"front": np.zeros((64, 64, 3), np.uint8)}, PANDA.home, "x"), "expects"),
        (Observation({"front": img.astype(np.float32)}, PANDA.home, "x"), "uint8"),
        (Observation({"front": img}, np.full(8, np.nan), "x"), "NaN"),
        (Observation({"front": img}, PANDA.home[:5], "x"), "shape"),
        (Observation({"front": img}, PANDA.home, "   "), "empty instruction"),
    ]
    for obs, msg in bad:
        with pytest.raises(ObservationError, match=msg):
            rt.infer(obs)


def test_bc_learns_and_is_deterministic(tmp_path):
    """A few steps on synthetic episodes: loss falls, same seed -> same weights, resume works."""
    from vla_rl_ros.core.policy.bc import BCArgs, EpisodeData, train_bc

    rng = np.random.default_rng(0)
    eps = []
    for i in range(6):
        T = 12
        state = (PANDA.home + 0.01 * rng.standard_normal((T, 8))).astype(np.float32)
        sign = 1.0 if i % 2 else -1.0
        action = state + sign * 0.05
        img = np.full((T, 32, 32, 3), 200 if i % 2 else 30, np.uint8)
        eps.append(EpisodeData({"front": img}, state, action.astype(np.float32),
                               "pick up the red cube" if i % 2 else "pick up the blue cube"))

    def run(out, steps=60, resume=""):
        a = BCArgs(out=str(out), steps=steps, batch_size=16, lr=2e-3, warmup=5, val_every=30, seed=1,
                   threads=1, horizon=4, d_model=32, augment_shift=0, resume=resume, export_onnx=False)
        return train_bc(a, eps, ["front"], PANDA.joint_names, progress=False)

    r1 = run(tmp_path / "a")
    r2 = run(tmp_path / "b")
    h = json.loads((tmp_path / "a" / "history.json").read_text())
    tr = [x["train_loss"] for x in h if "train_loss" in x]
    assert tr[-1] < tr[0] * 0.7
    assert (tmp_path / "a" / "loss.png").stat().st_size > 1000
    assert r1["final_val_loss"] == pytest.approx(r2["final_val_loss"], rel=1e-6)
    m, cfg = load_checkpoint(r1["checkpoint"], joint_names=PANDA.joint_names)
    assert cfg["meta"]["step"] == 60
    r3 = run(tmp_path / "a", steps=80, resume=r1["checkpoint"])
    assert load_checkpoint(r3["checkpoint"])[1]["meta"]["step"] == 80


def test_aux_targets_follow_the_instruction():
    from vla_rl_ros.core.sim.task_features import AUX_DIM, aux_targets
    from vla_rl_ros.core.sim.tasks import OBJECTS, PICK_LIFT, PUSH_DISTANCE

    T = 3
    pos = {o: np.array([0.1 * i, -0.1 * i, 0.02], np.float32) for i, o in enumerate(OBJECTS)}
    env = np.tile(np.concatenate([pos[o] for o in OBJECTS] + [np.array([0.5, 0.0, 0.3], np.float32)]), (T, 1))
    env[1:, 3:6] += np.array([0.0, 0.0, 0.05], np.float32)  # green cube lifted after frame 0
    a = aux_targets(env, "pick up the green cube")
    assert a.shape == (T, AUX_DIM)
    np.testing.assert_allclose(a[:, :3], env[:, 3:6])  # the instructed cube, not another one
    np.testing.assert_allclose(a[:, 3:6], np.tile(pos["green_cube"] + [0, 0, PICK_LIFT], (T, 1)), atol=1e-6)
    np.testing.assert_allclose(a[:, 6:9], env[:, 3:6] - env[:, 15:18], atol=1e-6)
    push = aux_targets(env, "push the blue cube to the left")
    np.testing.assert_allclose(push[0, 3:6], pos["blue_cube"] + [0, PUSH_DISTANCE, 0], atol=1e-6)
    place = aux_targets(env, "put the red cube on the purple pad")
    np.testing.assert_allclose(place[0, 3:5], pos["purple_pad"][:2], atol=1e-6)
    with pytest.raises(ValueError, match="environment_state"):
        aux_targets(env[:, :10], "pick up the red cube")


def test_aux_grounding_loss_localises_and_init_keeps_weights(tmp_path):
    """Synthetic scenes: the instructed square's image position is learnable through the aux
    head; --init starts from a checkpoint without aux head and keeps its policy outputs."""
    from vla_rl_ros.core.policy.bc import BCArgs, EpisodeData, init_from_checkpoint, train_bc

    rng = np.random.default_rng(0)
    eps = []
    for i in range(160):
        T = 2
        state = np.tile(PANDA.home, (T, 1)).astype(np.float32)
        img = np.full((T, 32, 32, 3), 40, np.uint8)
        x, y = rng.integers(2, 26, size=2)
        img[:, y : y + 5, x : x + 5] = (220, 30, 30)
        env = np.zeros((T, 18), np.float32)
        env[:, 0], env[:, 1] = x / 32.0, y / 32.0  # red cube position <-> pixel position
        from vla_rl_ros.core.sim.task_features import aux_targets

        eps.append(EpisodeData({"front": img}, state, state + 0.01, "pick up the red cube",
                               aux=aux_targets(env, "pick up the red cube")))

    def run(out, steps, aux_weight=1.0, init=""):
        a = BCArgs(out=str(out), steps=steps, batch_size=32, lr=1e-3, warmup=5, val_every=steps, seed=0,
                   threads=1, horizon=4, d_model=32, keypoints=4, augment_shift=0, export_onnx=False,
                   aux_weight=aux_weight, init=init, val_fraction=0.25)
        return train_bc(a, eps, ["front"], PANDA.joint_names, progress=False)

    r0 = run(tmp_path / "a", 1)
    r1 = run(tmp_path / "b", 200)
    h0 = json.loads((tmp_path / "a" / "history.json").read_text())[-1]["val_cube_err_cm"]
    h1 = json.loads((tmp_path / "b" / "history.json").read_text())[-1]["val_cube_err_cm"]
    assert h1 < 0.6 * h0, (h0, h1)
    # --init: a checkpoint trained without aux -> same policy outputs, a fresh aux head
    plain = run(tmp_path / "c", 2, aux_weight=0.0)
    base, _ = load_checkpoint(plain["checkpoint"])
    assert base.aux is None
    m = init_from_checkpoint(plain["checkpoint"], PANDA.joint_names, 22).eval()
    assert m.aux is not None and m.cfg.aux_dim == 22
    img, st, lg = example_inputs(base, 2, seed=3)
    with torch.no_grad():
        np.testing.assert_allclose(m(img, st, lg).numpy(), base(img, st, lg).numpy(), atol=1e-6)
    assert r1["checkpoint"] and r0["checkpoint"]


def instruction_table() -> dict:
    """Every instruction the simulator can issue -> a fixed pseudo-embedding (no MiniLM needed)."""
    from vla_rl_ros.core.sim.tasks import all_task_specs, make_instruction

    rng = np.random.default_rng(0)
    return {make_instruction(s): (rng.standard_normal(384) / 20).astype(np.float32).tolist() for s in all_task_specs()}


def _ckpt_v(tmp_path, name, version, seed=0, **over):
    cfg = dict(SMALL, **over)
    torch.manual_seed(seed)
    m = VLAPolicy(PolicyConfig(**cfg), Normalization(PANDA.home.tolist(), [0.5] * 8, [0.0] * 8, [0.1] * 8)).eval()
    return save_checkpoint(m, tmp_path / name, version=version)


def test_hot_swapper_installs_between_inferences_refuses_bad_and_rolls_back(tmp_path):
    from vla_rl_ros.core.policy.runtime import HotSwapper, Observation, PolicyRuntime

    v1 = _ckpt_v(tmp_path, "v1", 1, seed=0)
    v2 = _ckpt_v(tmp_path, "v2", 2, seed=1)
    rt = PolicyRuntime(v1, backend="torch", joint_names=PANDA.joint_names, threads=1)
    events = []
    sw = HotSwapper(rt, on_event=events.append)
    obs = Observation({"front": np.full((32, 32, 3), 90, np.uint8)}, PANDA.home.copy(), "pick up the red cube")
    out1 = sw.active().infer(obs)

    sw.request(str(v2)).join()
    assert events and events[-1].event == "loaded", events[-1].reason
    assert sw.version == 1 and sw.pending()  # validated, but not installed until the next inference
    out2 = sw.active().infer(obs)
    assert sw.version == 2 and not np.allclose(out1, out2)
    assert [e.event for e in events] == ["loaded", "swapped"] and events[-1].swap_us < 5e4

    # refusals: corrupt bytes, NaN weights, a different I/O layout, a missing dir, an empty path
    bad = tmp_path / "corrupt"
    import shutil

    shutil.copytree(v2, bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")
    nan = _ckpt_v(tmp_path, "nan", 9)
    from safetensors.torch import load_file, save_file

    st = load_file(str(nan / "model.safetensors"))
    k = next(k for k, v in st.items() if v.is_floating_point() and v.numel() > 10)
    st[k][0] = float("nan")
    save_file(st, str(nan / "model.safetensors"))  # manifest checksum now wrong too
    (nan / "manifest.json").unlink()  # (and even without a manifest it must be refused)
    layout = _ckpt_v(tmp_path, "h8", 5, horizon=8)
    for p, why in ((bad, "sha256"), (nan, "manifest"), (layout, "horizon"), (tmp_path / "nope", "does not exist"),
                   ("", "empty")):
        sw.request(str(p), block=True)
        assert events[-1].event == "refused" and why in events[-1].reason, (p, events[-1].reason)
        assert not sw.pending() and sw.version == 2
        np.testing.assert_allclose(sw.active().infer(obs), out2)  # the running version keeps running

    sw.rollback()
    assert np.allclose(sw.active().infer(obs), out1) and sw.version == 1
    assert events[-1].event == "rollback" and events[-1].previous_version == 2
    sw2 = HotSwapper(PolicyRuntime(v1, backend="torch", joint_names=PANDA.joint_names))
    with pytest.raises(LookupError):
        sw2.rollback()
