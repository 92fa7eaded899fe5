"""The per-step layout of a logged episode, as a LeRobot (v3.0) ``features`` dict.

One row of the dataset is one *control step* (one executed action token). Field names are
fixed here; every other module (logger node, trainer, replay) uses these constants.

======================================  =========  ==============  ============================
key                                     dtype      shape           meaning
======================================  =========  ==============  ============================
``observation.images.<cam>``            image      (H, W, 3)       RGB uint8 frame the policy saw
                                        (video)                    (PNG in parquet by default;
                                                                   mp4 with ``use_videos``)
``observation.state``                   float32    (dof,)          joint positions at the step
``action``                              float32    (dof,)          executed joint targets a_t
                                                                   (= mean + exploration noise)
``rl.action_mean``                      float32    (dof,)          behaviour mean mu_b(o_t) of
                                                                   this token
``rl.sigma``                            float32    (dof,)          exploration std of this token
                                                                   (0 in deploy mode)
``rl.log_prob``                         float32    (1,) scalar     log pi_b(a_t | o_t) of the
                                                                   executed token (NaN allowed:
                                                                   "not available", e.g. sigma=0)
``rl.chunk_id``                         int64      (1,) scalar     the chunk's header stamp, ns
                                                                   (the chunk's identity)
``rl.chunk_index``                      int64      (1,) scalar     index of this step in its chunk
``rl.policy_version``                   int64      (1,) scalar     weights version that produced
                                                                   the chunk
``next.reward``                         float32    (1,) scalar     reward received after the step
``next.done``                           bool       (1,) scalar     episode ended after the step
``next.success``                        bool       (1,) scalar     task solved after the step
LeRobot's ``task``                      string     per episode     the language instruction
======================================  =========  ==============  ============================

LeRobot adds its own ``timestamp``, ``frame_index``, ``episode_index``, ``index`` and
``task_index`` columns.

Scalars follow LeRobot's own convention for ``next.reward``/``next.done`` (see
``lerobot/rl/gym_manipulator.py``): they are declared with shape ``(1,)`` and stored in
parquet as plain scalar columns (``datasets.Value``). Callers of
:class:`~vla_rl_ros.core.data.writer.EpisodeWriter` may give a Python number, a numpy scalar,
a 0-d or a 1-element array; the writer hands LeRobot one 1-D column per scalar feature (the
layout LeRobot uses for its own ``frame_index``/``index`` columns), which sidesteps the
"only 0-dimensional arrays can be converted to Python scalars" failure that per-frame
1-element arrays hit in ``datasets`` with newer numpy. Reading back yields one value per
frame.

The mean is named ``rl.action_mean`` (not ``action_mean``): LeRobot's
``dataset_to_policy_features`` treats every key starting with ``action`` as the policy's
action, so RL-only fields live under the ``rl.`` prefix, which LeRobot ignores for policies.
"""

from __future__ import annotations

from collections.abc import Sequence

# ---- field names (single source of truth) ----------------------------------------------
IMAGE_PREFIX = "observation.images."
STATE = "observation.state"
ACTION = "action"
ACTION_MEAN = "rl.action_mean"
SIGMA = "rl.sigma"
LOG_PROB = "rl.log_prob"
CHUNK_ID = "rl.chunk_id"
CHUNK_INDEX = "rl.chunk_index"
POLICY_VERSION = "rl.policy_version"
REWARD = "next.reward"
DONE = "next.done"
SUCCESS = "next.success"
#: optional privileged simulator state (object and end-effector positions), LeRobot's standard
#: name for it; never a policy input here, only an auxiliary training target (see core/policy/bc.py)
ENV_STATE = "observation.environment_state"

#: columns LeRobot adds to every dataset (not given by callers)
LEROBOT_DEFAULT_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")

#: float fields that must be finite (NaN/Inf is refused at submit time)
FINITE_KEYS = (STATE, ACTION, ACTION_MEAN, SIGMA, REWARD)

DEFAULT_ROBOT_TYPE = "panda"

#: smallest image side for ``dtype="video"``: SVT-AV1 (lerobot's default codec) crashes the
#: process with SIGFPE on frames below ~28 px
MIN_VIDEO_SIDE = 32


def image_key(camera: str) -> str:
    """The feature key of camera ``camera``: ``observation.images.<camera>``."""
    return IMAGE_PREFIX + camera


def make_features(
    joint_names: Sequence[str],
    cameras: Sequence[str] = ("front",),
    image_shape: tuple[int, int] = (224, 224),
    *,
    use_videos: bool = False,
    environment_state: Sequence[str] = (),
) -> dict[str, dict]:
    """Build the LeRobot ``features`` dict for a robot with ``len(joint_names)`` joints.

    Args:
        joint_names: names of the state/action dimensions, in vector order (``dof`` entries).
        cameras: camera names; each becomes ``observation.images.<name>``.
        image_shape: ``(H, W)`` of every camera image (RGB, uint8).
        use_videos: store images as mp4 video (``dtype="video"``) instead of PNG-in-parquet.
        environment_state: names of an optional ``observation.environment_state`` vector
            (privileged simulator state); empty: no such feature.

    Returns:
        A dict ``key -> {"dtype", "shape", "names"}`` with tuple shapes, ready for
        ``LeRobotDataset.create(..., features=...)`` / :class:`EpisodeWriter`.
    """
    names = [str(n) for n in joint_names]
    if not names:
        raise ValueError("joint_names is empty: a robot needs at least one joint")
    if len(set(names)) != len(names):
        raise ValueError(f"joint_names has duplicates: {names}")
    cams = [str(c) for c in cameras]
    if len(set(cams)) != len(cams):
        raise ValueError(f"camera names have duplicates: {cams}")
    for c in cams:
        if not c or "/" in c:
            raise ValueError(f"invalid camera name {c!r} (empty or contains '/')")
    h, w = (int(v) for v in image_shape)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_shape must be positive (H, W), got {image_shape}")
    if use_videos and min(h, w) < MIN_VIDEO_SIDE:
        raise ValueError(
            f"use_videos needs images of at least {MIN_VIDEO_SIDE}x{MIN_VIDEO_SIDE}, got {h}x{w} "
            "(lerobot's AV1 encoder dies with SIGFPE on smaller frames); use use_videos=False"
        )
    dof = len(names)

    features: dict[str, dict] = {}
    for c in cams:
        features[image_key(c)] = {
            "dtype": "video" if use_videos else "image",
            "shape": (h, w, 3),
            "names": ["height", "width", "channels"],
        }

    def vec(dtype: str = "float32") -> dict:
        return {"dtype": dtype, "shape": (dof,), "names": list(names)}

    def scalar(dtype: str) -> dict:
        return {"dtype": dtype, "shape": (1,), "names": None}

    features[STATE] = vec()
    features[ACTION] = vec()
    features[ACTION_MEAN] = vec()
    features[SIGMA] = vec()
    features[LOG_PROB] = scalar("float32")
    features[CHUNK_ID] = scalar("int64")
    features[CHUNK_INDEX] = scalar("int64")
    features[POLICY_VERSION] = scalar("int64")
    features[REWARD] = scalar("float32")
    features[DONE] = scalar("bool")
    features[SUCCESS] = scalar("bool")
    env = [str(n) for n in environment_state]
    if env:
        features[ENV_STATE] = {"dtype": "float32", "shape": (len(env),), "names": env}
    return features


def camera_keys(features: dict[str, dict]) -> list[str]:
    """Keys of the image/video features."""
    return [k for k, ft in features.items() if ft["dtype"] in ("image", "video")]


def is_scalar(ft: dict) -> bool:
    """True for a scalar feature (LeRobot's ``shape == (1,)`` convention)."""
    return tuple(ft["shape"]) == (1,) and ft["dtype"] not in ("image", "video", "string")


def user_keys(features: dict[str, dict]) -> list[str]:
    """Feature keys a caller must provide per frame (everything but LeRobot's own columns)."""
    return [k for k in features if k not in LEROBOT_DEFAULT_KEYS]


def normalize_features(features: dict[str, dict]) -> dict[str, dict]:
    """Canonical copy of a features dict: tuple shapes, no LeRobot-added ``info`` entries.

    Used to compare the features a writer was given with those of an existing dataset.
    """
    out = {}
    for k, ft in features.items():
        ft2 = {
            "dtype": ft["dtype"],
            "shape": tuple(int(s) for s in ft["shape"]),
            "names": list(ft["names"]) if isinstance(ft.get("names"), (list, tuple)) else ft.get("names"),
        }
        out[k] = ft2
    return out
