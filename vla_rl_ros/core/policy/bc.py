"""Behaviour cloning of the VLA on logged LeRobot episodes.

For every frame t the target is the chunk of the next H executed actions
``[a_t, …, a_{t+H-1}]`` (repeated last action past the episode's end, masked out of the loss),
expressed as deltas from the state q_t and normalised with statistics computed on the training
split (which then travel in the checkpoint). L1 loss, AdamW, cosine schedule with warm-up,
random-shift image augmentation, a validation split by episode, seeded end to end. Writes a
checkpoint (+ ONNX export), a loss-curve PNG, a JSON log and TensorBoard event files (``tb/``:
``train/loss``, ``train/lr``, ``val/loss``, ``val/cube_err_cm``); resumes from its own checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from vla_rl_ros.core.policy.bc_config import BCArgs, BCConfig  # noqa: F401  (BCArgs: the former name)
from vla_rl_ros.core.policy.checkpoint import load_checkpoint, save_checkpoint
from vla_rl_ros.core.policy.model import Normalization, PolicyConfig, VLAPolicy
from vla_rl_ros.core.policy.text import InstructionEncoder
from vla_rl_ros.core.distributed import init_distributed
from vla_rl_ros.core.scalars import ScalarLog


@dataclass
class EpisodeData:
    images: dict  # cam -> (T, H, W, 3) uint8
    state: np.ndarray  # (T, S) float32
    action: np.ndarray  # (T, A) float32
    task: str
    label: np.ndarray | None = None  # (T, A) what to imitate, when it differs from ``action``
    aux: np.ndarray | None = None  # (T, A) auxiliary grounding targets (core/sim/task_features.aux_targets)


class ChunkDataset:
    """Index of (episode, t) pairs; builds batches of (images, state, lang, target, mask)."""

    def __init__(self, episodes: list[EpisodeData], cameras, horizon: int, lang: dict[str, np.ndarray]):
        self.episodes, self.cameras, self.h, self.lang = episodes, list(cameras), horizon, lang
        self.index = np.array([(e, t) for e, ep in enumerate(episodes) for t in range(len(ep.state))], dtype=np.int64)

    def __len__(self):
        return len(self.index)

    def targets(self, e: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        ep = self.episodes[e]
        acts = ep.action if ep.label is None else ep.label
        T = len(acts)
        idx = np.arange(t, t + self.h)
        mask = (idx < T).astype(np.float32)
        chunk = acts[np.minimum(idx, T - 1)]
        return chunk - ep.state[t][None, : chunk.shape[1]], mask

    @property
    def has_aux(self) -> bool:
        return any(ep.aux is not None for ep in self.episodes)

    @property
    def aux_dim(self) -> int:
        """Width of the auxiliary targets (0 without any)."""
        return next((ep.aux.shape[1] for ep in self.episodes if ep.aux is not None), 0)

    def aux_stats(self) -> tuple[np.ndarray, np.ndarray]:
        a = np.concatenate([ep.aux for ep in self.episodes if ep.aux is not None])
        return a.mean(0), np.maximum(a.std(0), 1e-3)

    def aux_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, aux_dim) targets (zeros where absent) and a (B,) mask of rows that have them."""
        out, mask = np.zeros((len(rows), self.aux_dim), np.float32), np.zeros(len(rows), np.float32)
        for i, (e, t) in enumerate(self.index[rows]):
            a = self.episodes[e].aux
            if a is not None:
                out[i], mask[i] = a[t], 1.0
        return torch.from_numpy(out), torch.from_numpy(mask)

    def batch(self, rows: np.ndarray):
        imgs, states, langs, deltas, masks = [], [], [], [], []
        for e, t in self.index[rows]:
            ep = self.episodes[e]
            imgs.append(np.stack([ep.images[c][t] for c in self.cameras]))
            states.append(ep.state[t])
            langs.append(self.lang[ep.task])
            d, m = self.targets(e, t)
            deltas.append(d)
            masks.append(m)
        return (torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(states)),
                torch.from_numpy(np.stack(langs)), torch.from_numpy(np.stack(deltas).astype(np.float32)),
                torch.from_numpy(np.stack(masks)))

    def normalization(self) -> Normalization:
        states = np.concatenate([ep.state for ep in self.episodes])
        deltas = np.concatenate([self.targets(e, t)[0] for e, t in self.index[:: max(1, len(self.index) // 20000)]])
        eps = 1e-3
        return Normalization(
            state_mean=states.mean(0).tolist(), state_std=np.maximum(states.std(0), eps).tolist(),
            delta_mean=deltas.mean(0).tolist(), delta_std=np.maximum(deltas.std(0), eps).tolist(),
        )


def shift_offsets(batch: int, pad: int, gen: torch.Generator) -> torch.Tensor | None:
    """The crop offsets of :func:`random_shift` for a batch (None without augmentation)."""
    return torch.randint(0, 2 * pad + 1, (batch, 2), generator=gen) if pad > 0 else None


def random_shift(images: torch.Tensor, pad: int, gen: torch.Generator | None = None,
                 offsets: torch.Tensor | None = None) -> torch.Tensor:
    """DrQ-style augmentation on uint8 (B, C, H, W, 3): pad by replication, random crop back
    (offsets drawn from ``gen``, or given: a data-parallel rank's share of the global batch's)."""
    if pad <= 0:
        return images
    B, C, H, W, _ = images.shape
    x = images.permute(0, 1, 4, 2, 3).reshape(B, C * 3, H, W).float()
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = torch.empty(B, C * 3, H, W)
    offs = shift_offsets(B, pad, gen) if offsets is None else offsets
    for i in range(B):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        out[i] = x[i, :, dy : dy + H, dx : dx + W]
    return out.reshape(B, C, 3, H, W).permute(0, 1, 3, 4, 2).round().clamp(0, 255).to(torch.uint8)


def masked_l1_sum(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    err = (pred - target).abs().mean(-1)  # (B, H)
    return (err * mask).sum()


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_l1_sum(pred, target, mask) / mask.sum().clamp(min=1.0)


def split_episodes(n: int, frac: float, seed: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = max(1, int(round(n * frac))) if n > 1 and frac > 0 else 0
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def _save_train_state(path: Path, opt: torch.optim.Optimizer, step: int, history: list, rng_state) -> None:
    tensors, meta = {}, {"step": step, "history": history, "groups": []}
    for gi, group in enumerate(opt.param_groups):
        meta["groups"].append({k: v for k, v in group.items() if k != "params"})
        for pi, p in enumerate(group["params"]):
            for k, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v):
                    tensors[f"{gi}.{pi}.{k}"] = v.detach().cpu().contiguous()
    tensors["rng.torch"] = rng_state
    save_file(tensors, str(path / "train_state.safetensors"))
    (path / "train_state.json").write_text(json.dumps(meta))


def _load_train_state(path: Path, opt: torch.optim.Optimizer):
    meta = json.loads((path / "train_state.json").read_text())
    tensors = load_file(str(path / "train_state.safetensors"))
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{gi}.{pi}.")}
            if st:
                opt.state[p] = st
    return meta["step"], meta["history"], tensors.get("rng.torch")


def plot_curves(history: list[dict], path: Path, title: str = "behaviour cloning") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    tr = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    va = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    has_aux = any("val_cube_err_cm" in h for h in history)
    if tr:
        ax.plot(*zip(*tr), label="train loss (L1 + aux)" if has_aux else "train L1 (normalised)", alpha=0.8)
    if va:
        ax.plot(*zip(*va), "o-", label="validation L1")
    cube = [(h["step"], h["val_cube_err_cm"]) for h in history if "val_cube_err_cm" in h]
    if cube:  # the grounding read-out, on its own axis
        ax2 = ax.twinx()
        ax2.plot(*zip(*cube), "s--", color="tab:green", label="instructed cube error (cm, val)")
        ax2.set_ylabel("instructed cube position error (cm)")
        ax2.legend(loc="center right")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_aux_cm(model: VLAPolicy, ds: ChunkDataset, mean: torch.Tensor, std: torch.Tensor,
                    batch_size: int = 128, max_rows: int = 4096) -> float:
    """Mean error (cm) of the instructed cube's position read out by the aux head (rows with
    targets only): how well the backbone grounds the instruction in the image."""
    rows = np.arange(len(ds))[: max_rows]
    errs = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            r = rows[i : i + batch_size]
            img, st, lang, _, _ = ds.batch(r)
            aux, m = ds.aux_batch(r)
            pred = model.aux(model.prefix(img, st, lang)) * std + mean
            e = (pred[:, :3] - aux[:, :3]).norm(dim=-1)
            errs.append(e[m > 0])
    model.train()
    e = torch.cat(errs) if errs else torch.zeros(0)
    return float(e.mean()) * 100.0 if len(e) else float("nan")


def init_from_checkpoint(path, joint_names, aux_dim: int) -> VLAPolicy:
    """A fresh model with ``path``'s architecture, weights and normalisation, plus a newly
    initialised aux head when ``aux_dim`` > 0 and the checkpoint has none."""
    src, config = load_checkpoint(path, joint_names=joint_names)
    cfg = PolicyConfig.from_dict({**config["policy"], "aux_dim": aux_dim or src.cfg.aux_dim})
    model = VLAPolicy(cfg, src.norm)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    if unexpected or any(not k.startswith("aux.") for k in missing):
        raise ValueError(f"--init {path}: weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def evaluate_loss(model: VLAPolicy, ds: ChunkDataset, batch_size: int = 128, max_rows: int = 4096) -> float:
    if len(ds) == 0:
        return float("nan")
    rows = np.arange(len(ds))[: max_rows]
    total, weight = 0.0, 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            img, st, lang, delta, mask = ds.batch(rows[i : i + batch_size])
            pred = model.normalized_delta(img, st, lang)
            target = (delta - model.delta_mean) / model.delta_std
            total += float(masked_l1(pred, target, mask)) * float(mask.sum())
            weight += float(mask.sum())
    model.train()
    return total / max(weight, 1.0)


def train_bc(args: BCConfig, episodes: list[EpisodeData], cameras, joint_names, progress=True) -> dict:
    # ~86 lines on purpose: the supervised loop (split, normalise, optimise, validate, export) reads
    # top to bottom like a reference training script; its pieces are one-use steps
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    dist = init_distributed()  # torchrun: this rank's share of every global batch (core/distributed.py)
    progress = progress and dist.main
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not episodes:
        raise ValueError("no episodes to train on")
    image_size = episodes[0].images[cameras[0]].shape[1]
    tasks = sorted({ep.task for ep in episodes})
    enc = InstructionEncoder()
    lang = {t: enc.encode(t) for t in tasks}
    train_ids, val_ids = split_episodes(len(episodes), args.val_fraction, args.seed)
    train_ds = ChunkDataset([episodes[i] for i in train_ids], cameras, args.horizon, lang)
    val_ds = ChunkDataset([episodes[i] for i in val_ids], cameras, args.horizon, lang)

    start_step, history = 0, []
    aux_dim = train_ds.aux_dim if train_ds.has_aux and args.aux_weight > 0 else 0
    if args.resume:
        model, _ = load_checkpoint(args.resume, joint_names=joint_names)
        model.train()
    elif args.init:
        model = init_from_checkpoint(args.init, joint_names, aux_dim).train()
    else:
        cfg = PolicyConfig(
            cameras=tuple(cameras), image_size=int(image_size), state_dim=episodes[0].state.shape[1],
            action_dim=episodes[0].action.shape[1], horizon=args.horizon, d_model=args.d_model,
            keypoints=args.keypoints, aux_dim=aux_dim,
            joint_names=tuple(joint_names),
        )
        model = VLAPolicy(cfg, train_ds.normalization()).train()
    aux_on = model.aux is not None and train_ds.has_aux and args.aux_weight > 0
    if aux_on:
        aux_mean, aux_std = (torch.from_numpy(v.astype(np.float32)) for v in train_ds.aux_stats())
    dist.broadcast_params(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)  # the same global batches on every rank
    if args.resume and (Path(args.resume) / "train_state.json").is_file():
        start_step, history, rng = _load_train_state(Path(args.resume), opt)
        if rng is not None:
            gen.set_state(rng)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    from tqdm import tqdm

    bar = tqdm(range(start_step, args.steps), initial=start_step, total=args.steps, desc="train-bc",
               disable=not progress, dynamic_ncols=True)
    t0 = time.time()
    with ScalarLog(out, enabled=args.tensorboard and dist.main) as scalars:  # every history entry also as a scalar
        running = None
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            rows = torch.randint(0, len(train_ds), (args.batch_size,), generator=gen).numpy()
            offs = shift_offsets(len(rows), args.augment_shift, gen)
            rows = dist.share(rows)  # alone: all of them
            img, st, lg, delta, mask = train_ds.batch(rows)
            img = random_shift(img, args.augment_shift, offsets=None if offs is None else dist.share(offs))
            prefix = model.prefix(img, st, lg)
            pred = model.head(prefix)
            # normalised by the global batch's mask: the ranks' gradients sum to the single-process one
            loss = masked_l1_sum(pred, (delta - model.delta_mean) / model.delta_std, mask) / \
                dist.sum(mask.sum()).clamp(min=1.0)
            if aux_on:
                aux, amask = train_ds.aux_batch(rows)
                aux_err = F.smooth_l1_loss(model.aux(prefix), (aux - aux_mean) / aux_std, reduction="none").mean(-1)
                loss = loss + args.aux_weight * (aux_err * amask).sum() / dist.sum(amask.sum()).clamp(min=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            dist.sum_grads(model.parameters())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            lv = dist.sum(loss.detach()).item()
            running = lv if running is None else 0.98 * running + 0.02 * lv
            if not dist.main:  # rank 0 alone validates, logs and writes checkpoints
                continue
            if step % 25 == 0:
                history.append({"step": step, "train_loss": running, "lr": lr_at(step)})
                scalars.add_dict("train", {"loss": history[-1]["train_loss"], "lr": history[-1]["lr"]}, step)
            if (step + 1) % args.val_every == 0 or step + 1 == args.steps:
                v = evaluate_loss(model, val_ds)
                rec = {"step": step + 1, "val_loss": v}
                post = {"loss": f"{running:.4f}", "val": f"{v:.4f}"}
                if aux_on and val_ds.has_aux:
                    rec["val_cube_err_cm"] = evaluate_aux_cm(model, val_ds, aux_mean, aux_std)
                    post["cube_cm"] = f"{rec['val_cube_err_cm']:.2f}"
                history.append(rec)
                scalars.add_dict("val", {k.removeprefix("val_"): x for k, x in rec.items() if k != "step"}, step + 1)
                bar.set_postfix(**post)
                _save(model, opt, args, out, step + 1, history, gen, lang, t0, train_ids, val_ids, final=False)
        result = _save(model, opt, args, out, args.steps, history, gen, lang, t0, train_ids, val_ids,
                       final=True) if dist.main else None
    dist.close()
    return result


def _save(model, opt, args, out, step, history, gen, lang, t0, train_ids, val_ids, final) -> dict:
    model.eval()
    val = [h["val_loss"] for h in history if "val_loss" in h]
    meta = {
        "trained_by": "vla-rl-ros train-bc",
        "args": asdict(args),
        "step": step,
        "train_seconds": time.time() - t0,
        "train_episodes": len(train_ids),
        "val_episodes": len(val_ids),
        "final_val_loss": val[-1] if val else None,
        "params": sum(p.numel() for p in model.parameters()),
    }
    from vla_rl_ros.core.policy.grounding import grounding_files

    extra = dict(grounding_files(args.init or args.resume))  # keeps understanding what its parent did
    if final and args.export_onnx:
        from vla_rl_ros.core.policy.backends import (
            OnnxRuntimeBackend, TorchBackend, example_inputs, export_onnx, parity,
        )

        onnx_path = export_onnx(model, out / "model.onnx")
        meta["onnx_parity_max_abs"] = parity(
            TorchBackend(model), OnnxRuntimeBackend(onnx_path), example_inputs(model, 2, seed=1)
        )
        extra["model.onnx"] = onnx_path
    ckpt = save_checkpoint(model, out / "checkpoint", version=args.version, meta=meta,
                           instructions={k: v.tolist() for k, v in lang.items()}, extra_files=extra)
    _save_train_state(ckpt, opt, step, history, gen.get_state())
    (out / "history.json").write_text(json.dumps(history))
    plot_curves(history, out / "loss.png")
    model.train()
    return {"checkpoint": str(ckpt), **meta}


def load_episodes(roots, cameras=None, progress=True, success_only=False, label: str = "auto",
                  aux_targets=None) -> tuple[list[EpisodeData], list[str], list[str]]:
    """Read every episode (or only the successful ones) of the given LeRobot datasets into memory.

    ``label`` picks what behaviour cloning imitates: ``action`` (what was executed), ``mean``
    (``rl.action_mean``: the demonstrator's intention), or ``auto`` — the mean for steps logged
    without exploration noise (``rl.sigma`` all zero: scripted experts publish their noise-free
    chunk there, so noisy demonstrations are imitated clean, DART-style), else the executed
    action. ``aux_targets(environment_state (T, E), instruction) -> (T, A)``: the auxiliary
    grounding targets of an episode logged with ``observation.environment_state`` (the simulator's
    task knowledge, ``core/sim/task_features.aux_targets``); None: no auxiliary targets. Returns
    (episodes, camera names, joint names); datasets must agree on cameras and joints.
    """
    if label not in ("auto", "action", "mean"):
        raise ValueError(f"label must be auto, action or mean, got {label!r}")
    from tqdm import tqdm

    from vla_rl_ros.core.data import schema
    from vla_rl_ros.core.data.reader import iter_episode_frames
    from vla_rl_ros.core.data.store import read_info

    episodes, cams_all, joints_all = [], None, None
    for root in roots:
        info = read_info(Path(root))
        if info is None:
            raise FileNotFoundError(f"no LeRobot dataset at {str(root)!r} (meta/info.json missing)")
        feats = info["features"]
        cams = [k[len(schema.IMAGE_PREFIX):] for k in feats if k.startswith(schema.IMAGE_PREFIX)]
        if cameras is not None:
            missing = [c for c in cameras if c not in cams]
            if missing:
                raise ValueError(f"dataset {root} lacks camera(s) {missing}")
            cams = list(cameras)
        names = feats[schema.STATE].get("names") or []
        joints = list(names) if isinstance(names, list) else list(names.get("joints", []))
        if cams_all is None:
            cams_all, joints_all = cams, joints
        elif cams != cams_all or joints != joints_all:
            raise ValueError(f"dataset {root} has cameras {cams} / joints {joints}, others {cams_all} / {joints_all}")
        keys = [schema.image_key(c) for c in cams] + [schema.STATE, schema.ACTION]
        if success_only and schema.SUCCESS in feats:
            keys.append(schema.SUCCESS)
        use_mean = label != "action" and schema.ACTION_MEAN in feats
        if use_mean:
            keys.append(schema.ACTION_MEAN)
            if label == "auto" and schema.SIGMA in feats:
                keys.append(schema.SIGMA)
        has_env = aux_targets is not None and schema.ENV_STATE in feats
        if has_env:
            keys.append(schema.ENV_STATE)
        n = int(info["total_episodes"])
        for _, d in tqdm(iter_episode_frames(root, keys=keys), total=n, desc=f"loading {Path(root).name}",
                         disable=not progress, leave=False):
            if len(d[schema.STATE]) == 0:
                continue
            if success_only and schema.SUCCESS in d and not np.any(d[schema.SUCCESS]):
                continue
            action = d[schema.ACTION].astype(np.float32)
            lab = None
            if use_mean:
                mean = d[schema.ACTION_MEAN].astype(np.float32)
                if label == "auto" and schema.SIGMA in d:
                    noisy = np.any(np.asarray(d[schema.SIGMA]) > 0, axis=-1)
                    mean = np.where(noisy[:, None], action, mean)
                lab = mean if np.all(np.isfinite(mean)) and not np.array_equal(mean, action) else None
            episodes.append(EpisodeData(
                images={c: d[schema.image_key(c)] for c in cams},
                state=d[schema.STATE].astype(np.float32), action=action, task=str(d["task"]), label=lab,
                aux=aux_targets(d[schema.ENV_STATE], str(d["task"])) if has_env else None,
            ))
    return episodes, cams_all or [], joints_all or []
