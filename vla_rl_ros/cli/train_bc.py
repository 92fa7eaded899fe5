"""``vla-rl-ros train-bc``: behaviour cloning of the VLA on LeRobot datasets."""

from __future__ import annotations

from pathlib import Path

from vla_rl_ros.cli.common import build_or_die, check_writable_dir, die, require_datasets
from vla_rl_ros.core.config import add_fields, write_config
from vla_rl_ros.core.policy.bc_config import BCConfig

HELP = "behaviour cloning on LeRobot datasets"


def add_arguments(p) -> None:
    add_fields(p, BCConfig)


def main(args) -> int:
    cfg = build_or_die(BCConfig, args)
    require_datasets(cfg.data)
    for name, path in (("--resume", cfg.resume), ("--init", cfg.init)):
        if path and not (Path(path) / "config.json").exists():
            die(f"{name} {path!r}: no checkpoint there (config.json missing)")
    out = check_writable_dir(cfg.out)
    write_config(out / "train_bc_config.json", "train-bc", cfg)
    from vla_rl_ros.core.policy.bc import load_episodes, train_bc
    from vla_rl_ros.core.sim.task_features import aux_targets

    episodes, cams, joints = load_episodes(list(cfg.data), success_only=not cfg.all_episodes, label=cfg.label,
                                           aux_targets=aux_targets)
    if not episodes:
        die("no (successful) episodes in the given datasets")
    n_frames = sum(len(e.state) for e in episodes)
    print(f"training on {len(episodes)} episodes / {n_frames} frames from {len(cfg.data)} dataset(s); cameras {cams}")
    result = train_bc(cfg, episodes, cams, joints)
    if result is None:  # a torchrun rank other than 0: rank 0 wrote the checkpoint and reports
        return 0
    print(f"checkpoint: {result['checkpoint']}")
    print(f"final validation L1: {result['final_val_loss']:.4f}; {result['train_seconds']:.0f}s; "
          f"ONNX parity max |diff| {result.get('onnx_parity_max_abs', float('nan')):.2e}")
    print(f"loss curve: {Path(cfg.out) / 'loss.png'}")
    return 0
