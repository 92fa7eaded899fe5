"""train-bc and train-rl samples per second: 1 process against 2 torchrun ranks (gloo), same global
batch, on this machine's CPU cores, side by side in one run.

    .venv/bin/python bench/ddp_speed.py [--only bc|rl] [--steps 40] [--batch 64] [--image 96]
                                        [--rl-episodes 6] [--rl-steps 40] [--rl-epochs 20] [--rl-batch 128]

Rows: 1 process with 1 thread, 1 process with 2 threads, 2 ranks with 1 thread each (the same
global batch split between them). train-bc: synthetic episodes of the shipped policy's shapes (one
96 px camera, 8 joints, horizon 8); validation and ONNX export off, so the figure is the training
step. train-rl: explored rollouts of the shipped checkpoint (collected once, direct, into a
temporary folder), the update of its action head; samples are decisions x epochs over the wall
time of ``train_rl``, which includes what every rank does alone and in full (loading, frozen
features, critic, advantages), so the more epochs the closer the figure is to the update's.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRAIN = textwrap.dedent("""
    import sys, time
    import numpy as np
    from vla_rl_ros.core.policy.bc import BCConfig, EpisodeData, train_bc
    from vla_rl_ros.core.robot import PANDA

    out, steps, batch, image, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rng = np.random.default_rng(0)
    eps = []
    for i in range(8):
        T = 40
        state = (PANDA.home + 0.01 * rng.standard_normal((T, 8))).astype(np.float32)
        action = (state + 0.05).astype(np.float32)
        img = rng.integers(0, 256, (T, image, image, 3), dtype=np.uint8)
        eps.append(EpisodeData({"front": img}, state, action, "pick up the red cube"))
    cfg = BCConfig(out=out, steps=steps, batch_size=batch, val_every=10 ** 9, seed=0, threads=threads,
                   export_onnx=False, tensorboard=False, val_fraction=0.125)
    t0 = time.perf_counter()
    train_bc(cfg, eps, ["front"], PANDA.joint_names, progress=False)
    sys.stdout.write(f"WALL {time.perf_counter() - t0:.3f}\\n")
""")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RL_TRAIN = textwrap.dedent("""
    import sys, time
    from vla_rl_ros.core.rl import trainer
    from vla_rl_ros.core.rl.config import RLConfig
    from vla_rl_ros.core.rl.trainer import train_rl
    from vla_rl_ros.core.sim.task_features import episode_privileged_features

    marks = {}

    def timed(name, fn):  # the head update runs from trainable_head to mu_shift (rank 0, after the last epoch)
        def wrapped(*a, **k):
            marks[name] = time.perf_counter()
            return fn(*a, **k)
        return wrapped

    trainer.trainable_head = timed("update_start", trainer.trainable_head)
    trainer.mu_shift = timed("update_end", trainer.mu_shift)

    data, init, out, epochs, batch, threads = sys.argv[1:4] + [int(x) for x in sys.argv[4:7]]
    # target_kl: no early stop (every row runs all epochs)
    cfg = RLConfig(data=(data,), init=init, out=out, epochs=epochs, batch_size=batch, threads=threads,
                   export_onnx=False, tensorboard=False, target_kl=float(sys.argv[7]))
    t0 = time.perf_counter()
    r = train_rl(cfg, progress=False, privileged=episode_privileged_features)
    wall = time.perf_counter() - t0
    if r is not None:
        sys.stdout.write(f"DECISIONS {r['decisions']}\\n")
        sys.stdout.write(f"UPDATE {marks['update_end'] - marks['update_start']:.3f}\\n")
    sys.stdout.write(f"WALL {wall:.3f}\\n")
""")

#: train-rl rows: no early stop on the KL to behaviour (every row runs all its epochs)
NO_EARLY_STOP_KL = 1e9


def run(cmd: list[str]) -> float:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if r.returncode:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    return max(float(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("WALL"))


def run_rl(cmd: list[str]) -> tuple[float, float, int]:
    """(wall time of train_rl, of its head update (rank 0), decisions)."""
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if r.returncode:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    lines = r.stdout.splitlines()

    def first(key):
        return next(float(x.split()[1]) for x in lines if x.startswith(key))

    return max(float(x.split()[1]) for x in lines if x.startswith("WALL")), first("UPDATE"), int(first("DECISIONS"))


def torchrun(script: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(_port()), str(script)]


def table(title: str, rows: list[tuple[str, float]], samples: int) -> None:
    base = samples / rows[0][1]
    print(f"\n{title}")
    print("| setting | samples/s | x row 1 |\n|---|---|---|")
    for name, wall in rows:
        sps = samples / wall
        print(f"| {name} | {sps:,.0f} | {sps / base:.2f} |")


def bench_rl(a, tmp: Path) -> None:
    from vla_rl_ros.core.collect import DirectCollectConfig, collect_direct
    from vla_rl_ros.core.paths import checkpoint_or_default

    init = checkpoint_or_default("")
    ds = tmp / "rl_ds"
    cfg = DirectCollectConfig(seed=a.rl_seed, policy=init, explore_seed=a.rl_seed, seed_repeat=2,
                              max_steps=a.rl_steps)  # the default exploration σ
    collect_direct(str(ds), a.rl_episodes, cfg, workers=1)
    script = tmp / "train_rl.py"
    script.write_text(RL_TRAIN)
    args = [str(ds), init]

    def tail(out: str, threads: int) -> list[str]:
        return [str(tmp / out), str(a.rl_epochs), str(a.rl_batch), str(threads), str(NO_EARLY_STOP_KL)]

    runs = [("1 process, 1 thread", run_rl([sys.executable, str(script), *args, *tail("r1", 1)])),
            ("1 process, 2 threads", run_rl([sys.executable, str(script), *args, *tail("r2", 2)])),
            ("2 ranks (torchrun, gloo), 1 thread each", run_rl([*torchrun(script), *args, *tail("r3", 1)]))]
    n = runs[0][1][2]
    what = (f"{n} decisions of {a.rl_episodes} explored episodes of {Path(init).name}, global minibatch {a.rl_batch}, "
            f"{a.rl_epochs} epochs")
    table(f"train-rl head update, {what} (from trainable_head to the end of the last epoch, rank 0)",
          [(name, r[1]) for name, r in runs], n * a.rl_epochs)
    table(f"train-rl whole, {what} (wall time of train_rl incl. loading, features, critic, every rank in full)",
          [(name, r[0]) for name, r in runs], n * a.rl_epochs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image", type=int, default=96)
    ap.add_argument("--only", choices=("bc", "rl"), default=None, help="one of the two tables")
    ap.add_argument("--rl-episodes", type=int, default=6, help="explored episodes collected for train-rl")
    ap.add_argument("--rl-steps", type=int, default=40, help="their length limit (control ticks)")
    ap.add_argument("--rl-seed", type=int, default=0, help="their first scene and exploration seed")
    ap.add_argument("--rl-epochs", type=int, default=20)
    ap.add_argument("--rl-batch", type=int, default=128, help="train-rl global minibatch (decisions)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ddp_speed_"))
    if a.only != "bc":
        bench_rl(a, tmp)
    if a.only == "rl":
        return 0
    script = tmp / "train.py"
    script.write_text(TRAIN)
    args = [str(a.steps), str(a.batch), str(a.image)]
    rows = [
        ("1 process, 1 thread", run([sys.executable, str(script), str(tmp / "a"), *args, "1"])),
        ("1 process, 2 threads", run([sys.executable, str(script), str(tmp / "b"), *args, "2"])),
        ("2 ranks (torchrun, gloo), 1 thread each", run([*torchrun(script), str(tmp / "c"), *args, "1"])),
    ]
    table(f"train-bc, global batch {a.batch}, {a.steps} steps, {a.image} px (wall time of train_bc incl. start-up)",
          rows, a.steps * a.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
