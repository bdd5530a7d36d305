"""benchmarks/gpu_check.py runs (on the CPU, --quick): the GPU check cannot rot unseen between GPU sessions.

The device comparison itself is only meaningful on a GPU (here CPU is compared with CPU,
so every difference must be exactly 0); the suite never needs one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_prints_its_three_tables():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "1. parity" in out and "2. solvers" in out and "3. one LLM update" in out and "parity held" in out
    parity = out.split("1. parity")[1].split("2. solvers")[0].splitlines()[2:]
    from m2po_lab.losses import LOSSES

    assert len([r for r in parity if r.strip()]) == 2 * len(LOSSES)  # every registered loss, float32 and bf16
    assert all(r.split()[-1] == "same" for r in parity if r.strip())


def test_gpu_check_without_cuda_says_so_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-CUDA message does not apply")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "no CUDA device" in proc.stderr
