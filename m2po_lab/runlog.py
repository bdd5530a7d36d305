"""Run-directory I/O shared by the toy study, the LLM trainer and the explorer (docs/run_format.md).

Atomic writes (temporary file, then ``os.replace``), JSON-safe numbers, the tolerant
metrics.jsonl reader used to resume (a torn last line is dropped), and the periodic
importance-weight records (log-ratio quantiles and histogram, entropy by |r - 1| bin).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

LOG_RATIO_EDGES = torch.arange(-20, 21) / 10  # -2.0, -1.9, ..., 2.0
RATIO_DEV_EDGES = torch.tensor([0.0, 0.01, 0.03, 0.1, 0.2, 0.4, 0.7, 1.0, 2.0, float("inf")])
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def json_number(v):
    """JSON-safe number: inf / nan become None."""
    return v if isinstance(v, float) and math.isfinite(v) or not isinstance(v, float) else None


def read_metrics(path: Path, before: int | None = None) -> list[dict]:
    """The complete lines of a metrics.jsonl (a torn last line is dropped), optionally update < before."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn line can only be the last one
        if before is not None and row.get("update", -1) >= before:
            break
        rows.append(row)
    return rows


def log_ratio_histograms(log_ratio: torch.Tensor, entropy: torch.Tensor) -> list[dict]:
    """Per run: log-ratio quantiles and histogram, entropy by |r - 1| bin. (R, n, L) inputs."""
    out = []
    q = torch.tensor(QUANTILES)
    for lr, ent in zip(log_ratio, entropy):
        lr, ent = lr.reshape(-1), ent.reshape(-1)
        counts = torch.histc(lr.clamp(LOG_RATIO_EDGES[0], LOG_RATIO_EDGES[-1]), bins=len(LOG_RATIO_EDGES) - 1,
                             min=float(LOG_RATIO_EDGES[0]), max=float(LOG_RATIO_EDGES[-1]))
        dev = (lr.exp() - 1).abs()
        idx = torch.bucketize(dev, RATIO_DEV_EDGES[1:-1], right=True)  # bin of each token
        n_bins = len(RATIO_DEV_EDGES) - 1
        bin_n = torch.zeros(n_bins).index_add_(0, idx, torch.ones_like(dev))
        bin_e = torch.zeros(n_bins).index_add_(0, idx, ent)
        out.append({
            "is/log_ratio_quantiles": {"q": list(QUANTILES), "v": torch.quantile(lr, q).tolist()},
            "is/log_ratio_hist": {"edges": [round(e, 4) for e in LOG_RATIO_EDGES.tolist()], "counts": [int(c) for c in counts.tolist()]},
            "entropy_by_ratio": {
                "edges": [json_number(e) for e in RATIO_DEV_EDGES.tolist()],
                "entropy": [json_number(x) for x in (bin_e / bin_n.clamp(min=1)).tolist()],
                "counts": [int(c) for c in bin_n.tolist()],
            },
        })
    return out
