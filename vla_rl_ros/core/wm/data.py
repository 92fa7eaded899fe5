"""World-model training data: every logged frame, encoded once by the frozen policy backbone.

A *transition* is frame t → frame t + k of one episode with the k executed actions in between
(k = ``WMConfig.chunk``). Every frame starts one (not only the explorer's decision frames), so a
dataset of T frames gives about T transitions; the chunks overlap, which is what a model that
scores any k-token chunk from any state needs.

Labels per frame: the shaped reward, the discounted return (success absorbing, the convention of
``core/rl/samples.returns``), the episode's outcome, and — when the caller passes the simulator's
``contact`` function (``core/sim/task_features.episode_contact``) and the frames carry the
environment state — whether the gripper holds or pushes the instructed object. Optionally the
simulator's privileged task features (``privileged``), which the default model can put in its
latent (``WMConfig.privileged``). ``core/wm`` knows nothing of the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vla_rl_ros.core.data import schema as S
from vla_rl_ros.core.rl.samples import PrivilegedFn, returns

#: ``contact(environment_state (T, E), state (T, S), instruction) -> (T,) bool or None``
ContactFn = Callable[[np.ndarray, np.ndarray, str], "np.ndarray | None"]
#: frames per backbone forward pass (memory only)
ENCODE_BATCH = 256


@dataclass
class Frames:
    """Every logged frame of the datasets, in episode order."""

    feats: np.ndarray  # (N, F) pooled frozen backbone features
    state: np.ndarray  # (N, S) raw joint state
    action: np.ndarray  # (N, D) executed joint targets
    action_mean: np.ndarray  # (N, D) the behaviour's mean for the executed token (= action without noise)
    reward: np.ndarray  # (N,)
    ret: np.ndarray  # (N,) discounted return from the frame, success absorbing
    success: np.ndarray  # (N,) the episode's outcome
    contact: np.ndarray | None  # (N,) holding / pushing the instructed object (None: no label)
    priv: np.ndarray | None  # (N, P) the simulator's privileged task features (None: not logged / not asked for)
    episode: np.ndarray  # (N,) episode id (over all datasets)
    t: np.ndarray  # (N,) frame index within the episode

    def __len__(self) -> int:
        return len(self.t)

    def select_episodes(self, keep: np.ndarray) -> "Frames":
        """The frames of the episodes in ``keep``."""
        m = np.isin(self.episode, keep)
        return Frames(**{k: (None if v is None else v[m]) for k, v in self.__dict__.items()})

    def transitions(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (start, next) of every transition t → t + k inside one episode."""
        i = np.arange(len(self) - k)
        ok = (self.episode[i] == self.episode[i + k]) & (self.t[i + k] == self.t[i] + k)
        i = i[ok]
        return i, i + k

    def chunks(self, start: np.ndarray, k: int) -> np.ndarray:
        """(B, k, D) executed actions of the transitions starting at ``start``."""
        return np.stack([self.action[start + j] for j in range(k)], axis=1)


def encode_frames(model, images: np.ndarray, state: np.ndarray, lang: np.ndarray) -> np.ndarray:
    """Pooled frozen backbone features (N, F) of raw observations, in batches, without gradients."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(state), ENCODE_BATCH):
            sl = slice(i, i + ENCODE_BATCH)
            out.append(model.features(torch.from_numpy(np.array(images[sl])),
                                      torch.from_numpy(np.array(state[sl], np.float32)),
                                      torch.from_numpy(np.array(lang[sl], np.float32))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2 * model.cfg.d_model), np.float32)


def load_frames(roots, model, embed, gamma: float, contact: ContactFn | None = None, progress=True,
                privileged: PrivilegedFn | None = None, episode_ids: str = "") -> Frames:
    """Every frame of ``roots``, encoded by ``model``'s frozen backbone. ``embed``: logged
    instruction -> the network's language input (``core/policy/grounding.skill_embedder``);
    ``privileged``: the simulator's task features of each frame (``core/sim/task_features.
    episode_privileged_features``; None: not used); ``episode_ids``: the episodes of each dataset
    to load (``core/data/reader.parse_episode_list``; empty: all)."""
    from tqdm import tqdm

    from vla_rl_ros.core.data.reader import iter_episode_frames, parse_episode_list
    from vla_rl_ros.core.data.store import read_info

    cams = [S.image_key(c) for c in model.cfg.cameras]
    base = cams + [S.STATE, S.ACTION, S.REWARD, S.SUCCESS]
    parts: dict[str, list] = {k: [] for k in ("feats", "state", "action", "action_mean", "reward", "ret", "success",
                                             "contact", "priv", "episode", "t")}
    lang_cache: dict[str, np.ndarray] = {}
    ep_id, with_contact, with_priv = 0, contact is not None, privileged is not None
    for root in roots:
        info = read_info(Path(root))
        if info is None:
            raise FileNotFoundError(f"no LeRobot dataset at {str(root)!r} (meta/info.json missing)")
        missing = [k for k in base if k not in info["features"]]
        if missing:
            raise ValueError(f"dataset {root} lacks {missing}: not logged by this stack?")
        keys = base + [k for k in (S.ACTION_MEAN, S.ENV_STATE) if k in info["features"]]
        sel = parse_episode_list(episode_ids, int(info["total_episodes"]))
        for _, d in tqdm(iter_episode_frames(root, keys=keys, episodes=sel), total=len(sel),
                         desc=f"encoding {Path(root).name}",
                         disable=not progress, leave=False):
            T = len(d[S.STATE])
            if T < 2:
                continue
            task = str(d["task"])
            if task not in lang_cache:
                lang_cache[task] = np.asarray(embed(task), np.float32)
            images = np.stack([d[c] for c in cams], axis=1)
            state = np.asarray(d[S.STATE], np.float32)
            parts["feats"].append(encode_frames(model, images, state, np.repeat(lang_cache[task][None], T, 0)))
            success = bool(np.any(np.asarray(d[S.SUCCESS])))
            rew = np.asarray(d[S.REWARD], np.float64)
            act = np.asarray(d[S.ACTION], np.float32)
            parts["state"].append(state)
            parts["action"].append(act)
            parts["action_mean"].append(np.asarray(d[S.ACTION_MEAN], np.float32) if S.ACTION_MEAN in d else act)
            parts["reward"].append(rew.astype(np.float32))
            parts["ret"].append(returns(rew, success, gamma).astype(np.float32))
            parts["success"].append(np.full(T, success))
            c = None
            if with_contact and S.ENV_STATE in d:
                c = contact(np.asarray(d[S.ENV_STATE]), state, task)
            if c is None:
                with_contact = False  # one episode without a label: no contact head for anyone
            else:
                parts["contact"].append(np.asarray(c, bool))
            pv = privileged(np.asarray(d[S.ENV_STATE]), state, task) if with_priv and S.ENV_STATE in d else None
            if pv is None:
                with_priv = False
            else:
                parts["priv"].append(np.asarray(pv, np.float32))
            parts["episode"].append(np.full(T, ep_id))
            parts["t"].append(np.arange(T))
            ep_id += 1
    if ep_id == 0:
        raise ValueError("no episode with at least 2 frames in the data")
    cat = {k: np.concatenate(v) for k, v in parts.items() if k not in ("contact", "priv")}
    return Frames(contact=np.concatenate(parts["contact"]) if with_contact else None,
                  priv=np.concatenate(parts["priv"]) if with_priv else None, **cat)
