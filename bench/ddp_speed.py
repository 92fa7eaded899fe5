"""train-bc samples per second: 1 process against 2 torchrun ranks (gloo), same global batch, on
this machine's CPU cores, side by side in one run.

    .venv/bin/python bench/ddp_speed.py [--steps 40] [--batch 64] [--image 96]

Rows: 1 process with 1 thread, 1 process with 2 threads, 2 ranks with 1 thread each (the same
global batch split between them). Synthetic episodes of the shipped policy's shapes (one 96 px
camera, 8 joints, horizon 8); validation and ONNX export off, so the figure is the training step.
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


def run(cmd: list[str]) -> float:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if r.returncode:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    return max(float(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("WALL"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image", type=int, default=96)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ddp_speed_"))
    script = tmp / "train.py"
    script.write_text(TRAIN)
    args = [str(a.steps), str(a.batch), str(a.image)]
    rows = [
        ("1 process, 1 thread", run([sys.executable, str(script), str(tmp / "a"), *args, "1"])),
        ("1 process, 2 threads", run([sys.executable, str(script), str(tmp / "b"), *args, "2"])),
        ("2 ranks (torchrun, gloo), 1 thread each", run([sys.executable, "-m", "torch.distributed.run",
                                                          "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                                                          "--master-port", str(_port()), str(script),
                                                          str(tmp / "c"), *args, "1"])),
    ]
    base = a.steps * a.batch / rows[0][1]
    print(f"\ntrain-bc, global batch {a.batch}, {a.steps} steps, {a.image} px (wall time of train_bc incl. start-up)")
    print("| setting | samples/s | x row 1 |\n|---|---|---|")
    for name, wall in rows:
        sps = a.steps * a.batch / wall
        print(f"| {name} | {sps:,.0f} | {sps / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
