"""Importance-weight diagnostics every loss reports, as detached tensors (no host sync).

Keys (see docs/metrics.md for the glossary):
``is/ratio_mean``, ``is/ratio_max``, ``is/log_ratio_abs_p99``: the token ratios
``r = pi_theta / pi_behav`` over valid tokens; ``is/m2 = mean((log r)^2)``, the second
moment M2PO bounds; ``kl/k1 = mean(-log r)`` and
``kl/k3 = mean((r - 1) - log r)``: Schulman's estimators of KL(pi_behav || pi_theta)
from behaviour samples. k1 can cancel positive against negative shifts; M2 cannot.
Every statistic is computed in float32 or wider (these in float64), whatever the input dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        M2: masked_mean(lr.square(), mask),
    }
    return {k: v.float() for k, v in metrics.items()}


# ---------------------------------------------------------------- the metric schema
M2, ZEROED = "is/m2", "clip/frac"
"""``clip/frac`` is the one name for "gradient zeroed by the loss": the fraction of valid tokens a loss
clips, masks (M2PO) or drops (MIS), whatever its mechanism (docs/metrics.md)."""
ENTROPY_BY_RATIO, TOKENS_ZEROED, TOKENS_AMPLIFIED = "entropy/by_ratio", "tokens/zeroed", "tokens/amplified"
RENAMED = {"m2": M2, "entropy_by_ratio": ENTROPY_BY_RATIO, "masked_tokens": TOKENS_ZEROED,
           "amplified_tokens": TOKENS_AMPLIFIED}
"""Keys of run directories written before m2po-lab 0.2 and their names now; :func:`upgrade_row` reads them."""
RETIRED = {"m2po/m2_all": M2, "m2po/mask_frac": ZEROED}
"""Keys no longer written, each the duplicate of the key it maps to (dropped on read)."""


def upgrade_row(row: dict) -> dict:
    """A metrics row with the keys of :data:`RENAMED` under today's names and :data:`RETIRED` keys dropped
    (unchanged when it has none); a row holding a key under both names keeps today's."""
    if not any(k in row for k in (*RENAMED, *RETIRED)):
        return row
    out = {}
    for k, v in row.items():
        if k in RETIRED:
            continue
        new = RENAMED.get(k, k)
        if new != k and new in row:
            continue
        out[new] = v
    return out


TOKEN_MEAN, SEQ_MEAN, WEIGHTED, SUM, MAX, MIN, SAME, RECOMPUTE, RECORD = (
    "token_mean", "seq_mean", "weighted", "sum", "max", "min", "same", "recompute", "record")
MERGE_RULES = (TOKEN_MEAN, SEQ_MEAN, WEIGHTED, SUM, MAX, MIN, SAME, RECOMPUTE, RECORD)
"""How the parts of one optimizer mini-batch (micro-batches, data-parallel ranks) combine:
``token_mean`` weighted by valid tokens; ``seq_mean`` by sequences with a valid token;
``weighted`` by another key's count (``Metric.weight``); ``sum``, ``max``, ``min``; ``same``
(every part holds the same value); ``recompute`` (a statistic of the whole batch such as a
quantile: recomputed from the whole batch's tensors, never averaged); ``record`` (a
structured record written by the logger itself, not merged)."""


@dataclass(frozen=True)
class Metric:
    """One key of ``metrics.jsonl``: its merge rule and, for ``weighted``, the count it is weighted by."""

    key: str
    merge: str
    weight: str | None = None


def _m(key, merge, weight=None):
    return Metric(key, merge, weight)


SCHEMA: dict[str, Metric] = {m.key: m for m in (
    # every update, every method (the logger; docs/metrics.md has the meaning of each)
    _m("update", SAME), _m("staleness", SEQ_MEAN), _m("data/age_mean", SEQ_MEAN), _m("data/age_max", MAX), _m("reward", SEQ_MEAN), _m("loss", SUM), _m("entropy", TOKEN_MEAN),
    _m("grad_norm", SAME), _m("data/fixed_ok", SEQ_MEAN), _m("response_len", SEQ_MEAN),
    # every loss (importance_metrics and the zeroed fraction)
    _m(ZEROED, TOKEN_MEAN), _m(M2, TOKEN_MEAN), _m("is/ratio_mean", TOKEN_MEAN), _m("is/ratio_max", MAX),
    _m("is/log_ratio_abs_p99", RECOMPUTE), _m("kl/k1", TOKEN_MEAN), _m("kl/k3", TOKEN_MEAN),
    # loss-specific
    _m("clip/frac_high", TOKEN_MEAN), _m("clip/frac_low", TOKEN_MEAN), _m("clip/frac_dual", TOKEN_MEAN),
    _m("gspo/seq_clip_frac", SEQ_MEAN), _m("is/weight_clip_frac", TOKEN_MEAN),
    _m("m2po/candidates", SUM), _m("m2po/kept_candidates", SUM),
    _m("m2po/m2_before", WEIGHTED, "m2po/candidates"), _m("m2po/m2_after", WEIGHTED, "m2po/kept_candidates"),
    _m("m2po/candidate_frac", TOKEN_MEAN),
    _m("m2po/threshold", MIN),
    # the LLM trainer
    _m("amp/frac", TOKEN_MEAN), _m("amp/weight_share", RECOMPUTE),
    _m("queue/bytes_per_seq", SAME), _m("queue/bytes", SAME), _m("time/update_s", SUM),
    # evaluation intervals
    *(_m(f"eval/{k}", SAME) for k in ("reward", "fixed_ok", "fork_acc", "entropy_fixed", "entropy_fork", "accuracy",
                                      "accuracy_flexible", "accuracy_sampled")),
    # records
    *(_m(k, RECORD) for k in ("is/log_ratio_quantiles", "is/log_ratio_hist", ENTROPY_BY_RATIO, TOKENS_ZEROED,
                              TOKENS_AMPLIFIED)),
)}
"""Every key a run writes to ``metrics.jsonl`` (docs/metrics.md lists the same keys, a test checks it)."""


def merge_parts(parts: list[dict[str, torch.Tensor]], tokens, seqs, recomputed: dict | None = None) -> dict:
    """One metric dict for a mini-batch from the dicts of its parts (micro-batches), by :data:`SCHEMA`.

    ``tokens`` / ``seqs``: each part's valid-token and sequence counts. ``recomputed``: the
    ``recompute`` keys computed on the whole mini-batch (a missing one is an error: a
    quantile is never averaged). Unknown keys are an error, so every key has a stated rule.
    """
    recomputed = recomputed or {}
    w_tok = torch.stack([torch.as_tensor(t, dtype=torch.float64) for t in tokens])  # (P,)
    w_seq = torch.stack([torch.as_tensor(s, dtype=torch.float64) for s in seqs])  # (P,)
    out = {}
    for key in parts[0]:
        rule = SCHEMA[key].merge if key in SCHEMA else None
        if rule is None:
            raise KeyError(f"metric {key!r} has no merge rule in m2po_lab.metrics.SCHEMA")
        if rule == RECOMPUTE:
            if key not in recomputed:
                raise KeyError(f"metric {key!r} must be recomputed on the whole batch, not merged")
            out[key] = recomputed[key]
            continue
        v = torch.stack([widen(p[key].detach()).double().reshape(()) for p in parts])  # (P,)
        out[key] = _merge(rule, v, w_tok, w_seq, parts, SCHEMA[key].weight).float()
    return out


def _merge(rule, v, w_tok, w_seq, parts, weight_key):
    if rule in (SUM,):
        return v.sum()
    if rule == MAX:
        return v.max()
    if rule in (MIN,):
        return v.min()
    if rule == SAME:
        return v[0]
    w = {TOKEN_MEAN: w_tok, SEQ_MEAN: w_seq}.get(rule)
    if w is None:  # WEIGHTED
        w = torch.stack([widen(p[weight_key].detach()).double().reshape(()) for p in parts])
    return (v * w).sum() / w.sum().clamp(min=1e-300)
