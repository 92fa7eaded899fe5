"""The CUDA-graph backend (issue 22, item 4): on a GPU it returns what the torch model returns on
the CPU (batch 1 and a batch captured on demand) and ``backend: auto`` serves it; without a GPU it
is unavailable with a reason and ``auto`` falls through to ONNX Runtime / torch. The GPU half runs
where a GPU is (``bash bench/gpu_check.sh`` and this file on the lent device)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vla_rl_ros.core.policy.backends import (
    BackendUnavailable,
    CudaGraphBackend,
    TorchBackend,
    example_inputs,
    make_backend,
)
from vla_rl_ros.core.policy.checkpoint import load_checkpoint
from vla_rl_ros.core.robot import PANDA

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "vla_bc_v4"


def _model():
    return load_checkpoint(SHIPPED, joint_names=PANDA.joint_names)[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_the_graph_backend_is_unavailable_and_auto_falls_through():
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        CudaGraphBackend(_model())
    assert make_backend("auto", _model(), None).describe() == "torch (cpu)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_graph_backend_matches_the_cpu_model_and_auto_serves_it():
    cpu = TorchBackend(_model())
    cg = CudaGraphBackend(_model())
    for batch, seed in ((1, 0), (1, 5), (4, 1)):  # a new input into the same graph; a new batch size
        x = [t.numpy() for t in example_inputs(cpu.model, batch=batch, seed=seed)]
        want, got = cpu.infer(*x), cg.infer(*x)
        assert got.shape == want.shape == (batch, 8, 8)
        np.testing.assert_allclose(got, want, atol=5e-4)
    assert sorted(cg._graphs) == [1, 4]
    assert make_backend("auto", _model(), None).describe() in ("torch cuda graph", "tensorrt")
