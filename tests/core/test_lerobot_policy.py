"""LeRobot policies as a backend of the policy runtime (issue 21, item 1).

A tiny ACT is trained for a few optimizer steps with lerobot's own code path (``make_policy`` from
the dataset's features and stats, ``make_pre_post_processors``, ``policy.forward``) on two real
scripted-expert episodes written by the project's EpisodeWriter, saved with ``save_pretrained``
(model + processors), and loaded through :mod:`vla_rl_ros.core.policy.lerobot_backend`. Its chunks
must equal lerobot's own ``predict_action_chunk`` + postprocessor on the same observation."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_rl_ros.core.policy.checkpoint import CheckpointError
from vla_rl_ros.core.robot import PANDA

#: the tiny ACT's chunk length (chunk_size = n_action_steps) and image side (px)
CHUNK = 8
IMAGE = 32
TRAIN_STEPS = 20

pytestmark = pytest.mark.usefixtures("private_hf_cache")  # tests/conftest.py


def write_expert_dataset(root: Path) -> Path:
    """Two real PyBullet expert episodes (pick, push) at 32x32 px, written by the project's writer."""
    from vla_rl_ros.core.collect import expert_episode
    from vla_rl_ros.core.data import schema as S
    from vla_rl_ros.core.data.writer import EpisodeWriter
    from vla_rl_ros.core.sim.expert import ScriptedExpert
    from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

    world = PandaWorld(SimConfig(image_width=IMAGE, image_height=IMAGE, renderer="tiny", cameras=("front",)))
    feats = S.make_features(list(PANDA.joint_names), cameras=["front"], image_shape=(IMAGE, IMAGE))
    try:
        with EpisodeWriter(root, fps=10, features=feats, mode="thread") as w:
            for seed, family in ((3, "pick"), (4, "push")):
                frames, task, meta = expert_episode(world, ScriptedExpert(), seed, family)
                for f in frames:  # the dataset has no privileged state: the policy sees what the graph sees
                    f.pop(S.ENV_STATE, None)
                w.submit(frames, task, meta=meta)
            assert w.close(timeout=120) and not w.failed_episodes()
    finally:
        world.close()
    return root


def train_tiny_act(dataset: Path, out: Path, steps: int = TRAIN_STEPS) -> tuple[Path, list[float]]:
    """Train a tiny ACT as ``lerobot-train`` builds one (features and normalisation stats from the
    dataset's metadata) for ``steps`` optimizer steps and ``save_pretrained`` it with its processors
    into ``out``. Returns (out, losses)."""
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.optim.optimizers import AdamWConfig
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    from vla_rl_ros.core.data.reader import open_dataset, read_repo_id

    torch.manual_seed(0)
    cfg = ACTConfig(dim_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
                    use_vae=False, chunk_size=CHUNK, n_action_steps=CHUNK, vision_backbone="resnet18",
                    pretrained_backbone_weights=None, device="cpu")
    meta = LeRobotDatasetMetadata(read_repo_id(dataset), root=dataset)
    ds = open_dataset(dataset, delta_timestamps=resolve_delta_timestamps(cfg, meta))
    policy = make_policy(cfg, ds_meta=ds.meta)
    pre, post = make_pre_post_processors(cfg, dataset_stats=ds.meta.stats)
    opt = AdamWConfig(lr=1e-3, weight_decay=1e-4).build(policy.get_optim_params())
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    policy.train()
    losses: list[float] = []
    while len(losses) < steps:
        for batch in loader:
            loss, _ = policy.forward(pre(batch))
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.detach()))
            if len(losses) >= steps:
                break
    policy.eval()
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return out, losses


@pytest.fixture(scope="module")
def tiny_act(tmp_path_factory, private_hf_cache):
    root = tmp_path_factory.mktemp("lerobot_act")
    t0 = time.time()
    dataset = write_expert_dataset(root / "demos")
    out, losses = train_tiny_act(dataset, root / "act")
    print(f"tiny ACT: data + {len(losses)} steps in {time.time() - t0:.1f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return {"dir": out, "dataset": dataset, "losses": losses}


def _frame(dataset: Path, i: int):
    """Frame ``i`` of episode 0: (image uint8 HxWx3, state, task)."""
    from vla_rl_ros.core.data.reader import episode_frames, episode_summaries

    ep = episode_frames(dataset, 0)
    img = np.asarray(ep["observation.images.front"][i])
    if img.dtype != np.uint8:  # float CHW in [0, 1] -> uint8 HWC
        img = np.clip(np.round(np.moveaxis(img, 0, -1) * 255), 0, 255).astype(np.uint8)
    return img, np.asarray(ep["observation.state"][i], dtype=np.float32), episode_summaries(dataset)[0]["task"]


def _lerobot_chunk(path: Path, img: np.ndarray, state: np.ndarray, task: str) -> np.ndarray:
    """lerobot's own inference path: its policy class, its saved processors, its observation
    conversion, ``predict_action_chunk``, the postprocessor."""
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.utils import prepare_observation_for_inference

    policy = ACTPolicy.from_pretrained(str(path))
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(path))
    obs = {"observation.images.front": img.copy(), "observation.state": state.copy()}
    with torch.inference_mode():
        batch = pre(prepare_observation_for_inference(obs, torch.device("cpu"), task))
        return post(policy.predict_action_chunk(batch)).numpy()[0]


def test_tiny_act_trained_with_lerobot(tiny_act):
    d = tiny_act["dir"]
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"} <= names
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["type"] == "act" and cfg["chunk_size"] == CHUNK and cfg["pretrained_backbone_weights"] is None
    assert cfg["input_features"]["observation.images.front"]["shape"] == [3, IMAGE, IMAGE]
    assert cfg["input_features"]["observation.state"]["shape"] == [8]
    losses = tiny_act["losses"]
    assert len(losses) == TRAIN_STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # it learned something in 20 steps


def test_backend_chunk_equals_lerobot_own_inference(tiny_act):
    from vla_rl_ros.core.policy.lerobot_backend import LeRobotRuntime, is_lerobot_dir
    from vla_rl_ros.core.policy.factory import open_runtime
    from vla_rl_ros.core.policy.runtime import Observation

    d = tiny_act["dir"]
    assert is_lerobot_dir(d)
    rt = open_runtime(d, backend="auto", joint_names=PANDA.joint_names, threads=1)
    assert isinstance(rt, LeRobotRuntime) and rt.format == "lerobot"
    assert rt.cameras == ("front",) and rt.cfg.image_size == IMAGE and rt.horizon == CHUNK
    assert rt.cfg.state_dim == rt.cfg.action_dim == 8
    assert rt.language == "none" and rt.backend.describe() == "lerobot act (cpu)"
    u = rt.understand("pick up the red cube")
    assert u.understood and "not used" in u.reason

    img, state, task = _frame(tiny_act["dataset"], 5)
    chunk = rt.infer(Observation({"front": img}, state, task))
    assert chunk.shape == (CHUNK, 8) and chunk.dtype == np.float64 and np.all(np.isfinite(chunk))
    ref = _lerobot_chunk(d, img, state, task)
    assert ref.shape == (CHUNK, 8)
    np.testing.assert_allclose(chunk, ref, atol=1e-5, rtol=0)
    # absolute joint targets in the dataset's range (unnormalised), not the network's normalised output
    from vla_rl_ros.core.data.reader import episode_frames

    actions = np.concatenate([np.asarray(episode_frames(tiny_act["dataset"], e)["action"]) for e in (0, 1)])
    lo, hi = actions.min(0) - 0.5, actions.max(0) + 0.5
    assert np.all((chunk >= lo) & (chunk <= hi)), (chunk, lo, hi)
    # the image is an input: another frame (other image and state) gives another chunk, and the
    # same observation twice gives the same chunk (no hidden queue between calls)
    img2, state2, _ = _frame(tiny_act["dataset"], 20)
    other = rt.infer(Observation({"front": img2}, state2, task))
    assert np.abs(other - chunk).max() > 1e-4
    np.testing.assert_allclose(rt.infer(Observation({"front": img}, state, task)), chunk, atol=1e-6)
    # a frame of another size is resized to the policy's input (as the graph's fit_images would)
    import cv2

    big = cv2.resize(img, (2 * IMAGE, 2 * IMAGE), interpolation=cv2.INTER_NEAREST)
    again = cv2.resize(big, (IMAGE, IMAGE), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(rt.infer(Observation({"front": big}, state, task)),
                               rt.infer(Observation({"front": again}, state, task)), atol=1e-6)


def test_bad_observations_are_refused(tiny_act):
    from vla_rl_ros.core.policy.factory import open_runtime
    from vla_rl_ros.core.policy.runtime import Observation, ObservationError

    rt = open_runtime(tiny_act["dir"], backend="lerobot", joint_names=PANDA.joint_names, threads=1)
    img = np.full((IMAGE, IMAGE, 3), 100, np.uint8)
    with pytest.raises(ObservationError, match=r"state has shape \(7,\).*observation.state is \(8,\)"):
        rt.infer(Observation({"front": img}, PANDA.home[:7], "go"))
    with pytest.raises(ObservationError, match=r"missing camera image\(s\) \['front'\]"):
        rt.infer(Observation({"wrist": img}, PANDA.home, "go"))
    with pytest.raises(ObservationError, match="NaN"):
        rt.infer(Observation({"front": img}, np.full(8, np.nan), "go"))
    with pytest.raises(ObservationError, match="uint8"):
        rt.infer(Observation({"front": img.astype(np.float32)}, PANDA.home, "go"))
    with pytest.raises(ObservationError, match="empty instruction"):
        rt.infer(Observation({"front": img}, PANDA.home, "  "))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_clear_errors_for_what_does_not_fit(tiny_act, tmp_path):
    from tests.core.test_policy import small_model
    from vla_rl_ros.core.policy.checkpoint import save_checkpoint
    from vla_rl_ros.core.policy.factory import open_runtime
    from vla_rl_ros.core.policy.lerobot_backend import LeRobotRuntime, is_lerobot_dir

    d = tiny_act["dir"]
    # a robot with 7 joints: the state feature (8) does not match, both sizes named
    with pytest.raises(CheckpointError, match=r"observation.state has 8 entries, but the robot's joint state has 7"):
        LeRobotRuntime(d, joint_names=PANDA.joint_names[:7])
    # missing weights
    no_weights = _copy(d, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        open_runtime(no_weights, backend="lerobot", joint_names=PANDA.joint_names)
    # missing normalisation (processor files)
    no_proc = _copy(d, tmp_path / "no_proc")
    (no_proc / "policy_postprocessor.json").unlink()
    with pytest.raises(CheckpointError, match="no policy_postprocessor.json.*wrong scale"):
        open_runtime(no_proc, backend="lerobot", joint_names=PANDA.joint_names)
    # the project's own checkpoint given to the lerobot backend, and auto picking the right loader
    own = save_checkpoint(small_model(), tmp_path / "own", version=3)
    assert not is_lerobot_dir(own)
    with pytest.raises(CheckpointError, match="is a vla_rl_ros checkpoint .*not a LeRobot policy"):
        open_runtime(own, backend="lerobot", joint_names=PANDA.joint_names)
    assert open_runtime(own, backend="torch", joint_names=PANDA.joint_names).format == "vla_rl_ros"
    # a config.json without a lerobot type, and an unknown type
    untyped = _copy(d, tmp_path / "untyped")
    cfg = json.loads((untyped / "config.json").read_text())
    (untyped / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "type"}))
    assert not is_lerobot_dir(untyped)
    with pytest.raises(CheckpointError, match='no lerobot policy "type"'):
        open_runtime(untyped, backend="lerobot")
    unknown = _copy(d, tmp_path / "unknown")
    (unknown / "config.json").write_text(json.dumps({**cfg, "type": "transformer9000"}))
    with pytest.raises(CheckpointError, match="unknown policy type 'transformer9000'"):
        open_runtime(unknown)
    # weights that do not belong to the config (a bigger model)
    wrong = _copy(d, tmp_path / "wrong_weights")
    (wrong / "config.json").write_text(json.dumps({**cfg, "dim_model": 48}))
    with pytest.raises(CheckpointError, match="model.safetensors does not load into a act policy"):
        open_runtime(wrong)
    # an input the graph does not provide
    env = _copy(d, tmp_path / "env_state")
    feats = {**cfg["input_features"], "observation.environment_state": {"type": "ENV", "shape": [12]}}
    (env / "config.json").write_text(json.dumps({**cfg, "input_features": feats}))
    with pytest.raises(CheckpointError, match=r"needs input\(s\) \['observation.environment_state'\]"):
        open_runtime(env)


def test_hot_swap_between_lerobot_policies(tiny_act, tmp_path):
    from tests.core.test_policy import small_model
    from vla_rl_ros.core.policy.checkpoint import save_checkpoint
    from vla_rl_ros.core.policy.factory import load_any_candidate, open_runtime
    from vla_rl_ros.core.policy.runtime import HotSwapper

    run = tmp_path / "outputs" / "checkpoints"
    v1 = _copy(tiny_act["dir"], run / "000010" / "pretrained_model")
    v2 = _copy(tiny_act["dir"], run / "000020" / "pretrained_model")
    rt = open_runtime(v1, joint_names=PANDA.joint_names, threads=1)
    assert rt.version == 10  # lerobot's checkpoint layout gives the training step as the version
    sw = HotSwapper(rt, loader=load_any_candidate)  # the node's loader (after its trust check)
    sw.request(str(v2), block=True)
    assert sw.active().version == 20 and sw.active().path == str(v2.resolve())
    # across formats: refused, the running policy stays
    own = save_checkpoint(small_model(), tmp_path / "own", version=3)
    sw.request(str(own), block=True)
    assert sw.events[-1].event == "refused" and "across formats" in sw.events[-1].reason
    assert sw.active().version == 20
