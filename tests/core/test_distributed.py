"""train-bc under torchrun (issue 22, item 2): 2 CPU processes (gloo) with the same global batch
end with the weights of the single-process run to float precision (ranks share each global batch
and sum gradients normalised by the global batch's mask), rank 0 alone writes the checkpoint and
history, and the command is unchanged (``torchrun … vla_rl_ros.cli train-bc`` would run the same
function)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[2]
#: stated tolerance on the weights after 12 AdamW steps (lr 2e-3): measured 6.6e-5 (summation order
#: across 2 ranks, amplified by Adam's normalisation of near-zero gradients); a rank that skips the
#: gradient sum, or a different augmentation draw, ends 2.3e-2 away (lr x steps: as far as it gets)
TOLERANCE = 1e-3

TRAIN = textwrap.dedent("""
    import sys
    import numpy as np
    from vla_rl_ros.core.policy.bc import BCConfig, EpisodeData, train_bc
    from vla_rl_ros.core.robot import PANDA

    rng = np.random.default_rng(0)
    eps = []
    for i in range(6):  # textured images (the random shift matters), two instructions, 12 steps
        T = 12
        state = (PANDA.home + 0.01 * rng.standard_normal((T, 8))).astype(np.float32)
        action = (state + (0.05 if i % 2 else -0.05)).astype(np.float32)
        img = rng.integers(0, 256, (T, 32, 32, 3), dtype=np.uint8)
        eps.append(EpisodeData({"front": img}, state, action, "pick up the red cube" if i % 2 else "push the blue cube"))
    cfg = BCConfig(out=sys.argv[1], steps=12, batch_size=10, lr=2e-3, warmup=2, val_every=6, seed=3, threads=1,
                   horizon=4, d_model=32, augment_shift=2, export_onnx=False, tensorboard=True)
    r = train_bc(cfg, eps, ["front"], PANDA.joint_names, progress=False)
    sys.stdout.write("RESULT " + ("none" if r is None else "checkpoint") + "\\n")  # one write per rank
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, out: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd + [str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.timeout(900)
def test_two_ranks_match_one_process_on_the_same_global_batch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, str(script)], one)
    r = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
              "--master-port", str(_free_port()), str(script)], two)
    assert r.stdout.count("RESULT none") == 1 and r.stdout.count("RESULT checkpoint") == 1  # rank 1 wrote nothing
    a, b = load_file(str(one / "checkpoint" / "model.safetensors")), load_file(str(two / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    print(f"\nmax |weight difference| 1 process vs 2 ranks after 12 steps: {worst:.2e}")
    assert worst < TOLERANCE, worst
    assert not (tmp_path / "two" / "tb").exists() or len(list((tmp_path / "two" / "tb").iterdir())) == 1  # rank 0's log only
    ha, hb = json.loads((one / "history.json").read_text()), json.loads((two / "history.json").read_text())
    va = [h["val_loss"] for h in ha if "val_loss" in h]
    vb = [h["val_loss"] for h in hb if "val_loss" in h]
    assert len(va) == len(vb) == 2 and np.allclose(va, vb, atol=1e-5), (va, vb)
    ta = [h["train_loss"] for h in ha if "train_loss" in h]
    tb = [h["train_loss"] for h in hb if "train_loss" in h]
    assert ta and np.allclose(ta, tb, atol=1e-5), (ta, tb)
    assert abs(va[1] - va[0]) > 1e-3, va  # the weights moved between the two validations
