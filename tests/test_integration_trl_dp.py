"""M2POGRPOTrainer on 2 data-parallel processes (torchrun, accelerate MULTI_CPU, gloo): one global mask.

Each rank trains its shard of every optimizer batch; the mask of step 2 (one update
stale) must be exactly the mask one process computes on the whole optimizer batch (both
ranks' micro-batches in rank order), and the logged metrics those of that whole batch.
The test fails if any rank decides on its own shard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl", reason="needs the [trl] extra: pip install 'm2po-lab[trl]'")
pytest.importorskip("datasets")

from m2po_lab.llm.models import build_tiny_model  # noqa: E402
from m2po_lab.losses import LossConfig, get_loss  # noqa: E402
from m2po_lab.masking import m2po_mask  # noqa: E402

WORKER = Path(__file__).with_name("trl_dp_worker.py")


def _pad(t, width):
    return torch.nn.functional.pad(t, (0, width - t.shape[1])) if t.shape[1] < width else t


@pytest.mark.slow
def test_two_processes_decide_one_global_mask(tmp_path):
    model = build_tiny_model(tmp_path / "tiny", hidden=32, layers=1, heads=2, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(WORKER.parent.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(model), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert all(r["world"] == 2 and r["window_scope"] for r in ranks)
    step2 = [[s for s in r["seen"] if s["step"] >= 2] for r in ranks]  # the stale step, both micro-batches
    parts = [s for rank in step2 for s in rank]  # rank order, then micro-batch order
    width = max(s["mask"].shape[1] for s in parts)
    cat = lambda k: torch.cat([_pad(s[k], width) for s in parts])  # noqa: E731
    logp, old_logp, mask = cat("logp"), cat("old_logp"), cat("mask").bool()
    adv = torch.cat([s["adv"][:, None].expand(-1, width) if s["adv"].dim() == 1 else _pad(s["adv"], width)
                     for s in parts])
    expected = m2po_mask(logp - old_logp, adv, mask, tau=1e-3).keep
    assert torch.equal(cat("keep").bool(), expected)
    per_rank = torch.cat([m2po_mask(torch.cat([_pad(s["logp"] - s["old_logp"], width) for s in rank]),
                                    torch.cat([s["adv"] for s in rank]),
                                    torch.cat([_pad(s["mask"], width) for s in rank]), tau=1e-3).keep
                          for rank in step2])
    assert not torch.equal(per_rank, expected)  # masking each shard alone would differ: the test can tell
    whole = get_loss("m2po")(logp, old_logp, adv, mask, LossConfig(tau=1e-3), keep=expected)[1]
    log = [h for h in json.loads((tmp_path / "log.json").read_text()) if "m2po/m2_before" in h]
    for k in ("is/m2", "m2po/m2_before", "clip/frac", "is/ratio_max", "is/log_ratio_abs_p99"):
        assert log[1][k] == pytest.approx(float(whole[k]), rel=1e-5), k
