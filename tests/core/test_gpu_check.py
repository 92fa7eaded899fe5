"""The one-command device check (issue 22, item 4) on its CPU fallback: every row prints, the CPU
figures are real measurements of the shipped checkpoint, the GPU rows say there is no GPU, and
ONNX Runtime agrees with torch. (On a GPU machine the same script times the CUDA rows.)"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this test checks the fallback of a machine without a GPU")
def test_gpu_check_runs_its_cpu_fallback_and_says_which_figures_are_cpu_only(tmp_path):
    out = tmp_path / "gc.json"
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--threads", "1", "--n", "5", "--batch", "8",
                        "--seconds", "0.3", "--train-batch", "4", "--train-steps", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["gpu"] is None and "GPU: none" in r.stdout
    cpu = res["latency"]["torch eager (cpu)"]
    assert 0 < cpu["p50_ms"] <= cpu["p99_ms"] < 10_000
    ort = [k for k in res["latency"] if k.startswith("onnxruntime (")]
    assert ort and res["latency"][ort[0]]["p50_ms"] > 0 and res["onnx_parity"] < 1e-4
    assert res["throughput"]["torch (cpu)"] > 0 and math.isfinite(res["train"]["cpu fp32"])
    for row in (res["latency"]["torch cuda graph"], res["throughput"]["torch (cuda)"], res["train"]["cuda fp32"]):
        assert "no GPU" in row["note"]
    assert r.stdout.count("no GPU on this machine") == 5
