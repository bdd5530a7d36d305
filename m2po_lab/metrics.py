"""Importance-weight diagnostics every loss reports, as detached tensors (no host sync).

Keys (see docs/metrics.md for the glossary):
``is/ratio_mean``, ``is/ratio_max``, ``is/log_ratio_abs_p99``: the token ratios
``r = pi_theta / pi_behav`` over valid tokens; ``kl/k1 = mean(-log r)`` and
``kl/k3 = mean((r - 1) - log r)``: Schulman's estimators of KL(pi_behav || pi_theta)
from behaviour samples. k1 can cancel positive against negative shifts; M2 cannot.
Every statistic is computed in float32 or wider (these in float64), whatever the input dtype.
"""

from __future__ import annotations

import math

import torch

from ._checks import widen


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``mask`` in float32 or wider; 0 (not NaN) for an empty mask."""
    mask = mask.bool()
    x = widen(x)
    total = torch.where(mask, x, torch.zeros_like(x)).sum()
    return total / mask.sum().clamp(min=1)


def masked_quantile(x: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation quantile of ``x[mask]`` (as ``torch.quantile``) without a host sync.

    Invalid entries sort to the end as +inf; the index is a tensor. 0 for an empty mask.
    Computed in float32 or wider.
    """
    mask = mask.bool()
    x = widen(x)
    flat = torch.where(mask, x, torch.full_like(x, math.inf)).reshape(-1)  # (N,)
    if flat.numel() == 0:
        return x.new_zeros(())
    values, _ = torch.sort(flat)
    n = mask.sum()
    pos = q * (n - 1).clamp(min=0).to(values.dtype)
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, (n - 1).clamp(min=0))
    frac = pos - lo.to(values.dtype)
    out = values[lo] + frac * (values[hi] - values[lo])
    return torch.where(n > 0, out, torch.zeros_like(out))


@torch.no_grad()
def importance_metrics(log_ratio: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``is/*`` and ``kl/*`` over the valid tokens of a (B, T) log-ratio."""
    mask = mask.bool()
    # float64: exp stays finite for |log r| up to ~700 (float32 overflows past ~88)
    lr = torch.where(mask, log_ratio.detach().double(), torch.zeros_like(log_ratio, dtype=torch.float64))
    ratio = lr.exp()  # (B, T)
    neg_inf = torch.full_like(ratio, -math.inf)
    ratio_max = torch.where(mask, ratio, neg_inf).amax() if ratio.numel() else ratio.new_zeros(())
    metrics = {
        "is/ratio_mean": masked_mean(ratio, mask),
        "is/ratio_max": torch.where(mask.any(), ratio_max, torch.zeros_like(ratio_max)),
        "is/log_ratio_abs_p99": masked_quantile(lr.abs(), mask, 0.99),
        "kl/k1": masked_mean(-lr, mask),
        "kl/k3": masked_mean(ratio - 1 - lr, mask),
    }
    return {k: v.float() for k, v in metrics.items()}
