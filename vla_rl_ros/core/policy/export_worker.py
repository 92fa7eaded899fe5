"""Export a checkpoint's weights to ONNX in a process of its own.

    python -m vla_rl_ros.core.policy.export_worker CKPT OUT.onnx

Used by a running policy for a hot-swap candidate that ships no ``model.onnx``: torch's ONNX
exporter runs for seconds and holds the interpreter lock for stretches of up to ~0.7 s (measured
by ``bench/swap_stall.py``), which in-process starved the inference thread and the node's
callbacks (the control loop saw a second without a fresh chunk). Here it competes only for a core,
at a lower priority and with one torch thread.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m vla_rl_ros.core.policy.export_worker CKPT OUT.onnx", file=sys.stderr)
        return 2
    os.nice(10)  # the control loop shares the machine: it goes first
    import torch

    torch.set_num_threads(1)
    from vla_rl_ros.core.policy.backends import export_onnx
    from vla_rl_ros.core.policy.checkpoint import load_checkpoint

    model, _ = load_checkpoint(argv[0])
    export_onnx(model, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
