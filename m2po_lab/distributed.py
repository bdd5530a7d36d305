"""One M2PO decision for a mini-batch spread over data-parallel ranks, exactly as one process makes it.

Each rank holds some rows of the optimizer mini-batch (its micro-batches concatenated:
any number of rows, zero included, and its own padded length T). The functions here give
every rank the decision one process computes with :func:`m2po_lab.masking.m2po_mask`
(or :func:`~m2po_lab.masking.waterfill_threshold_tensor`, or
:func:`~m2po_lab.aggregation.aggregate`'s counts) on the concatenation of all ranks' rows
in rank order -- ties included: among equal M2 the later token in (rank, row, column)
order is masked first, and padding is never a candidate.

Communication (``torch.distributed`` collectives on the inputs' device, so gloo and
NCCL take the same path), per call, with N ranks and C_max the largest candidate count
on any rank:

- :func:`global_m2po_mask` and :func:`global_waterfill_threshold`: an all-gather of the
  candidates' M2 values. Round 1: ``all_gather`` of a 3 x int64 header (candidate count,
  dtype, error flag): 24 bytes sent, 24 N received, then one host read of that table (to
  size round 2). Round 2: ``all_gather`` of each rank's M2 values padded to C_max: 4 C_max
  bytes sent (float32; 8 for float64 inputs), 4 N C_max received; skipped when no rank has
  a candidate. Every rank then runs the single-process solver (one stable sort, one
  float64 cumulative sum) on the same values in the same order.
- :func:`global_batch_info`: one ``all_reduce`` of 4 x int64 (valid tokens, non-empty
  rows, rows, error flag): 32 bytes, one host read (verl reads its token count the same way).

Why an all-gather and not an exact distributed selection (bisection on the cut value
with O(log) all-reduces of a count and a sum): (1) it is exact by construction -- every
rank sorts the same values with the same code as one process, so the mask, its ties and
the threshold are bit for bit the single-process ones and no two ranks can disagree,
whereas sums reduced across ranks in another order can decide a prefix mean within
rounding of tau differently, and ties at the cut need one more exchange; (2) it takes 2
rounds where a bisection over float bits takes 32-64 sequential latency-bound rounds;
(3) its volume is small: 4 bytes per candidate token (about half of the valid tokens),
about 2 MB per rank for 1e6 tokens, next to a gradient all-reduce of 1 GB per step for a
0.5B-parameter model in bf16. The price: every rank sorts all candidates (as one process
would), and holds them (C floats).

No deadlock: call each function exactly once per mini-batch on every rank of ``group``
(a rank with fewer micro-batches concatenates them first), before the micro-batch
backward passes. Each call runs the same collectives in the same order on every rank
whatever its data (no rows, no candidates); an input error on one rank (a ValueError of
the package's checks, or one handed in as ``error=``) travels in the header and is
raised on every rank at once, so no rank waits for one that failed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist

from ._checks import RULES, as_bool_mask, check_choice, check_positive, widen
from .masking import cut_candidates, trust_region_candidates, waterfill_threshold_tensor

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


class GlobalMask(NamedTuple):
    """Algorithm 1 over every rank's rows; tensors on the inputs' device, no further host sync."""

    keep: torch.Tensor  # (B, T) bool: this rank's valid and unmasked tokens
    candidates: torch.Tensor  # (B, T) bool: this rank's candidates
    m2: torch.Tensor  # (B, T) float32 or float64: (log r)^2
    threshold: torch.Tensor  # () |log r| of the smallest masked candidate on any rank, inf if none
    num_candidates: torch.Tensor  # () int64: candidates on all ranks
    num_kept: torch.Tensor  # () int64: candidates kept on all ranks


def _device(*tensors) -> torch.device:
    for t in tensors:
        if isinstance(t, torch.Tensor):
            return t.device
    return torch.device("cpu")


def _raise_if_failed(n_failed: int, error: Exception | None, ranks: list[int] | None = None) -> None:
    """After an exchange: the failing rank re-raises its error, every other rank says where it was."""
    if error is not None:
        raise ValueError(f"{error} (on this rank; every rank of the group raises)") from error
    if n_failed:
        where = f"rank(s) {ranks}" if ranks else f"{n_failed} rank(s)"
        raise ValueError(f"an input check failed on {where} of the group; see that rank's message")


def gather_candidates(values: torch.Tensor, group, error: Exception | None = None) -> tuple[torch.Tensor, int]:
    """Every rank's 1-D ``values`` concatenated in rank order, and this rank's offset in it.

    Two ``all_gather`` rounds (the header, then the values padded to the largest count);
    see the module docstring for the bytes. ``error``: raise on every rank after round 1.
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    code = _DTYPE_CODES.get(values.dtype, -1)
    header = torch.tensor([values.numel(), code, int(error is not None)], dtype=torch.int64, device=values.device)
    headers = [torch.empty_like(header) for _ in range(world)]
    dist.all_gather(headers, header, group=group)
    table = torch.stack(headers).tolist()  # one host read: counts size round 2
    _raise_if_failed(sum(row[2] for row in table), error, [r for r, row in enumerate(table) if row[2]])
    if len({row[1] for row in table}) != 1 or code < 0:
        raise ValueError(
            f"the ranks' M2 dtypes differ or are not float32/float64 ({[row[1] for row in table]}; "
            "0 = float32, 1 = float64): give every rank inputs of the same precision class"
        )
    counts = [row[0] for row in table]
    width = max(counts)
    if width == 0:  # the same branch on every rank: the table is the same everywhere
        return values.new_zeros(0), 0
    padded = torch.full((width,), math.nan, dtype=values.dtype, device=values.device)  # (C_max,)
    padded[: values.numel()] = values
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]), sum(counts[:rank])  # (C_total,)


def global_m2po_mask(
    log_ratio, adv, mask, group, tau: float = 0.04, region: str = "harmful", rule: str = "algorithm1", *, error=None
) -> GlobalMask:
    """Algorithm 1 (arXiv 2510.01161; or ``rule="areal"``) over the rows of every rank of ``group``.

    ``keep`` equals the rows of this rank in ``m2po_mask(cat(log_ratio), cat(adv),
    cat(mask), tau, region, rule).keep`` of the ranks' batches concatenated in rank order
    (padded to one T), and ``threshold`` its threshold, bit for bit. Arguments as
    :func:`m2po_lab.masking.m2po_mask` (shapes (B, T) with this rank's B and T); ``error``:
    a ValueError this rank found before the call (every rank then raises). Communication:
    the module docstring (2 all-gathers, one host read).
    """
    device = _device(log_ratio, mask)
    cand = m2 = mask_b = None
    values = torch.zeros(0, device=device)
    if error is None:
        try:
            check_positive("tau", tau)
            check_choice("rule", rule, RULES)
            mask_b = as_bool_mask(mask)
            lr = widen(log_ratio.detach())  # (B, T) float32 or wider
            cand = trust_region_candidates(lr, adv, mask_b, region)  # (B, T)
            m2 = lr.square()  # (B, T)
            values = m2[cand]  # (C,) row-major, as the single-process solver reads them
        except ValueError as err:
            error = err
    everything, offset = gather_candidates(values, group, error)  # (C_total,)
    masked_all, threshold, n_kept = cut_candidates(everything, tau, rule)
    masked = torch.zeros_like(cand).masked_scatter(cand, masked_all[offset : offset + values.numel()])
    n_cand = torch.tensor(everything.numel(), device=everything.device)
    return GlobalMask(mask_b & ~masked, cand, m2, threshold, n_cand, n_kept)


def global_waterfill_threshold(m2, candidates, group, tau: float, *, error=None) -> torch.Tensor:
    """The released rule's exact threshold t (0-d float64) over the candidates of every rank.

    Equals ``waterfill_threshold_tensor(cat(m2), cat(candidates), tau)`` on the ranks'
    batches concatenated, bit for bit (it depends only on the sorted candidate values).
    Communication: the module docstring (2 all-gathers, one host read).
    """
    values = torch.zeros(0, device=_device(m2, candidates))
    if error is None:
        try:
            check_positive("tau", tau)
            values = widen(m2.detach())[as_bool_mask(candidates, "candidates")]  # (C,)
        except ValueError as err:
            error = err
    everything, _ = gather_candidates(values, group, error)  # (C_total,)
    return waterfill_threshold_tensor(everything, torch.ones_like(everything, dtype=torch.bool), tau)


def global_batch_info(mask, group, mode: str = "token-mean", *, error=None) -> dict[str, int]:
    """The keyword arguments that make :func:`~m2po_lab.aggregation.aggregate` global (verl's ``global_batch_info``).

    ``aggregate(per_token_loss, mask_part, mode, **global_batch_info(mask, group, mode))``
    on each rank (``mask`` (B, T): this rank's whole mini-batch; ``mask_part``: any
    micro-batch of it) gives that rank's share of the loss of every rank's rows in one
    piece, times ``dp_size`` = the group's size (the ranks' losses average to the global
    loss, as DDP/FSDP average gradients; pass ``dp_size=1`` instead where gradients are
    summed). Keys: ``dp_size``; ``num_tokens`` (token-mean: valid tokens on all ranks);
    ``num_seqs`` (seq-mean-*: rows with a valid token on all ranks; dr-grpo: all rows).
    One all-reduce of 4 int64 and one host read; the counts are Python ints.
    """
    from .aggregation import AGG_MODES

    device = _device(mask)
    counts = torch.zeros(4, dtype=torch.int64, device=device)
    if error is None:
        try:
            check_choice("mode", mode, AGG_MODES)
            mask_b = as_bool_mask(mask)
            if mask_b.dim() != 2:
                raise ValueError(f"mask must have shape (B, T), got {tuple(mask_b.shape)}")
            counts[0], counts[1], counts[2] = mask_b.sum(), (mask_b.sum(-1) > 0).sum(), mask_b.shape[0]
        except ValueError as err:
            error = err
    counts[3] = int(error is not None)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    tokens, seqs, rows, failed = counts.tolist()  # one host read
    _raise_if_failed(failed, error)
    info: dict[str, int] = {"dp_size": dist.get_world_size(group)}
    if mode == "token-mean":
        info["num_tokens"] = tokens
    elif mode == "dr-grpo":
        info["num_seqs"] = rows
    elif mode.startswith("seq-mean"):
        info["num_seqs"] = seqs
    return info


def global_metrics(metrics: dict[str, torch.Tensor], log_ratio, mask, group) -> dict[str, torch.Tensor]:
    """A loss's metrics of this rank's rows -> the metrics of every rank's rows, by each key's rule.

    The rules are :data:`m2po_lab.metrics.SCHEMA`'s: weighted means become ratios of summed
    (value x weight, weight); ``max`` / ``min`` reduce as such; ``recompute`` keys (the
    p99 of |log r|) are recomputed on every rank's valid log-ratios, gathered. Every rank
    must call this with the same keys. Communication: one all-reduce (SUM) of 2 x K float64
    plus the token and sequence counts, one all-reduce each for MAX and MIN keys, and for a
    recompute key an all-gather of this rank's valid |log r| (4 bytes per valid token, the
    two rounds of :func:`gather_candidates`).
    """
    from .metrics import MAX, MIN, RECOMPUTE, SAME, SEQ_MEAN, SCHEMA, SUM, TOKEN_MEAN, masked_quantile

    mask_b = as_bool_mask(mask)
    keys = sorted(metrics)
    rules = [SCHEMA[k].merge if k in SCHEMA else None for k in keys]
    unknown = [k for k, r in zip(keys, rules) if r is None]
    if unknown:
        raise KeyError(f"metrics {unknown} have no merge rule in m2po_lab.metrics.SCHEMA")
    values = torch.stack([widen(metrics[k].detach()).double().reshape(()) for k in keys])  # (K,)
    tokens = mask_b.sum().double()
    seqs = mask_b.any(-1).sum().double()
    weights = []
    for k, r in zip(keys, rules):
        if r == TOKEN_MEAN:
            weights.append(tokens)
        elif r == SEQ_MEAN:
            weights.append(seqs)
        elif r in (SUM, SAME, MAX, MIN, RECOMPUTE):
            weights.append(tokens.new_ones(()))
        else:  # weighted by another key's count
            weights.append(widen(metrics[SCHEMA[k].weight].detach()).double().reshape(()))
    w = torch.stack(weights).to(values.device)  # (K,)
    sums = torch.cat([values * w, w])
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    highs, lows = values.clone(), values.clone()
    dist.all_reduce(highs, op=dist.ReduceOp.MAX, group=group)
    dist.all_reduce(lows, op=dist.ReduceOp.MIN, group=group)
    n = len(keys)
    out = {}
    for i, (k, r) in enumerate(zip(keys, rules)):
        if r == MAX:
            out[k] = highs[i]
        elif r == MIN:
            out[k] = lows[i]
        elif r == SUM:
            out[k] = sums[i]
        elif r == SAME:
            out[k] = values[i]
        elif r == RECOMPUTE:
            out[k] = _recompute(k, log_ratio, mask_b, group, masked_quantile)
        else:
            out[k] = sums[i] / sums[n + i].clamp(min=1e-300)
    return {k: v.float() for k, v in out.items()}


def _recompute(key, log_ratio, mask_b, group, masked_quantile):
    if key != "is/log_ratio_abs_p99":
        raise KeyError(f"metric {key!r} must be recomputed on the whole batch; global_metrics knows how only for "
                       "is/log_ratio_abs_p99")
    abs_lr = widen(log_ratio.detach()).abs()[mask_b]  # (n_valid,)
    everything, _ = gather_candidates(abs_lr, group)
    return masked_quantile(everything, torch.ones_like(everything, dtype=torch.bool), 0.99).double()
