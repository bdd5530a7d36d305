"""Periodic importance-weight records of a trained batch: log-ratio quantiles and histogram,
mean token entropy by |r - 1| bin (the study and the LLM trainer log them every ``hist_every``)."""

from __future__ import annotations

import torch

from .rundir.files import json_number
from .metrics import ENTROPY_BY_RATIO

LOG_RATIO_EDGES = torch.arange(-20, 21) / 10  # -2.0, -1.9, ..., 2.0
RATIO_DEV_EDGES = torch.tensor([0.0, 0.01, 0.03, 0.1, 0.2, 0.4, 0.7, 1.0, 2.0, float("inf")])
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def log_ratio_histograms(log_ratio: torch.Tensor, entropy: torch.Tensor) -> list[dict]:
    """Per run: log-ratio quantiles and histogram, entropy by |r - 1| bin. (R, n, L) inputs (valid tokens only)."""
    out = []
    q = torch.tensor(QUANTILES)
    for lr, ent in zip(log_ratio, entropy):
        lr, ent = lr.reshape(-1).float(), ent.reshape(-1).float()
        counts = torch.histc(lr.clamp(LOG_RATIO_EDGES[0], LOG_RATIO_EDGES[-1]), bins=len(LOG_RATIO_EDGES) - 1,
                             min=float(LOG_RATIO_EDGES[0]), max=float(LOG_RATIO_EDGES[-1]))
        dev = (lr.exp() - 1).abs()
        idx = torch.bucketize(dev, RATIO_DEV_EDGES[1:-1], right=True)  # bin of each token
        n_bins = len(RATIO_DEV_EDGES) - 1
        bin_n = torch.zeros(n_bins).index_add_(0, idx, torch.ones_like(dev))
        bin_e = torch.zeros(n_bins).index_add_(0, idx, ent)
        out.append({
            "is/log_ratio_quantiles": {"q": list(QUANTILES), "v": torch.quantile(lr, q).tolist()},
            "is/log_ratio_hist": {"edges": [round(e, 4) for e in LOG_RATIO_EDGES.tolist()],
                                  "counts": [int(c) for c in counts.tolist()]},
            ENTROPY_BY_RATIO: {
                "edges": [json_number(e) for e in RATIO_DEV_EDGES.tolist()],
                "entropy": [json_number(x) for x in (bin_e / bin_n.clamp(min=1)).tolist()],
                "counts": [int(c) for c in bin_n.tolist()],
            },
        })
    return out
