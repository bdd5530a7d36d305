"""M2PO's second-moment trust region: which tokens to mask, solved exactly and fast.

Source: Zheng, Zhao, Chen, "Prosperity before Collapse" (arXiv 2510.01161),
Algorithm 1 (the paper's mask) and the rule of the authors' released verl fork
(a water-filling threshold, then a PPO clip).

Both solvers sort the candidate second moments once and take one cumulative sum:
no Python loop over tokens and no host read (``.item()``) at all, so they run on
a GPU without a sync. Non-candidate tokens are sorted to the end as ``+inf``.

Vocabulary: ``log_ratio = logp - old_logp`` (B, T); ``m2 = log_ratio ** 2``;
``mask`` marks valid (non-padding) tokens; ``keep`` marks the valid tokens whose
gradient survives.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import REGIONS, check_choice, check_positive


class M2POMask(NamedTuple):
    """What Algorithm 1 decided for one batch (all tensors, no host sync)."""

    keep: torch.Tensor  # (B, T) bool: valid and not masked
    candidates: torch.Tensor  # (B, T) bool: the trust-region tokens Algorithm 1 may mask
    m2: torch.Tensor  # (B, T) float: (log r)^2
    threshold: torch.Tensor  # () float: |log r| of the smallest masked candidate, inf if none


def _broadcast_adv(adv: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if adv.dim() == 1 and like.dim() == 2 and adv.shape[0] == like.shape[0]:
        return adv[:, None].expand_as(like)  # (B,) -> (B, T)
    if adv.shape != like.shape:
        raise ValueError(f"adv must have shape (B,) or {tuple(like.shape)}, got {tuple(adv.shape)}")
    return adv


def trust_region_candidates(log_ratio, adv, mask, region: str = "harmful") -> torch.Tensor:
    """Tokens M2PO may mask. (B, T) bool.

    ``region="harmful"`` (the paper, Trinity-RFT, ms-swift, the released code): the two
    quadrants in which PPO's clip could act, ``(A > 0 and r > 1) or (A < 0 and r < 1)``.
    ``region="all"`` (AReaL's ``m2_threshold``): every valid token.
    """
    check_choice("region", region, REGIONS)
    mask = mask.bool()
    if region == "all":
        return mask
    adv = _broadcast_adv(adv, log_ratio)
    harmful = ((adv > 0) & (log_ratio > 0)) | ((adv < 0) & (log_ratio < 0))  # (B, T)
    return mask & harmful


def _sorted_candidates(m2: torch.Tensor, cand: torch.Tensor):
    """Candidate M2 values ascending, non-candidates as +inf at the end; their order; count."""
    flat = torch.where(cand, m2, torch.full_like(m2, math.inf)).reshape(-1)  # (N,)
    sorted_m2, order = torch.sort(flat, stable=True)  # (N,), (N,) ties keep row-major order
    return sorted_m2, order, cand.sum()


def _cut(sorted_m2: torch.Tensor, n_cand, tau: float):
    """Algorithm 1's cut on ascending values: (number kept, threshold). No host sync.

    Sorted ascending, the mean of the first k candidates never decreases with k, so the
    greedy loop stops at the largest k whose prefix mean is <= tau.
    """
    n = sorted_m2.numel()
    k = torch.arange(1, n + 1, device=sorted_m2.device)  # (N,)
    prefix_sum = torch.cumsum(sorted_m2.double(), 0)  # (N,), inf past the candidates
    within = prefix_sum <= tau * k  # prefix mean <= tau
    n_kept = torch.where(within, k, torch.zeros_like(k)).amax()  # () largest k within budget
    first_masked = sorted_m2[n_kept.clamp(max=n - 1)]
    inf = torch.full_like(first_masked, math.inf)
    return k, n_kept, torch.where(n_kept < n_cand, first_masked.sqrt(), inf)


def _masked_static(m2, cand, tau):
    """Shape-static solver (vmap-able): non-candidates sort to the end as +inf."""
    sorted_m2, order, n_cand = _sorted_candidates(m2, cand)
    k, n_kept, threshold = _cut(sorted_m2, n_cand, tau)
    masked_sorted = (k > n_kept) & (k <= n_cand)  # (N,)
    return torch.zeros_like(masked_sorted).scatter(0, order, masked_sorted).view_as(cand), threshold


def _masked_compact(m2, cand, tau):
    """The same cut on the candidates only: half the sort when half the tokens are candidates.

    Reads one number from the device (the candidate count, to size the compacted tensor).
    """
    values = m2[cand]  # (C,)
    if values.numel() == 0:
        return torch.zeros_like(cand), torch.tensor(math.inf, device=m2.device)
    sorted_m2, order = torch.sort(values, stable=True)  # (C,), (C,) ties keep row-major order
    k, n_kept, threshold = _cut(sorted_m2, values.numel(), tau)
    masked_values = torch.zeros(values.shape, dtype=torch.bool, device=m2.device).scatter(0, order, k > n_kept)
    return torch.zeros_like(cand).masked_scatter(cand, masked_values), threshold


def m2po_mask(log_ratio, adv, mask, tau: float = 0.04, region: str = "harmful") -> M2POMask:
    """Paper Algorithm 1 (arXiv 2510.01161), as one sort and one cumulative sum.

    Algorithm 1: ``M = all True; T = candidates; while mean_{i in T} M2_i > tau: drop
    argmax_T M2_i from T and set its M to False``. Sorted ascending, the mean of the
    first k candidates never decreases with k, so the greedy loop stops at the largest
    k whose prefix mean is <= tau and masks the rest. This function finds that k from
    one ``torch.sort`` and one ``torch.cumsum``. Ties at the cut: the number masked is
    Algorithm 1's and every masked token's M2 is >= every kept candidate's; among
    candidates with equal M2 the later one in row-major order is masked first (a stable
    sort, so both paths below break ties the same way).

    Two equivalent paths: called directly, it sorts the candidates only, reading one
    number (their count) from the device; under ``torch.func`` transforms (``vmap``) it
    sorts every token with non-candidates as +inf, so shapes stay static and nothing is
    read from the device. Prefix sums are taken in float64 over the input's M2 values; a
    decision can differ from a differently-ordered float sum only when a prefix mean
    equals tau to ~1e-16.

    Args:
        log_ratio: (B, T) ``logp - old_logp`` (detached inside).
        adv: (B,) or (B, T) advantages (only their sign is used).
        mask: (B, T) valid tokens.
        tau: the second-moment budget, > 0 (paper: 0.04).
        region: "harmful" (paper) or "all" (AReaL).
    """
    check_positive("tau", tau)
    log_ratio = log_ratio.detach()
    cand = trust_region_candidates(log_ratio, adv, mask, region)  # (B, T)
    m2 = log_ratio.square()  # (B, T)
    if m2.numel() == 0:
        return M2POMask(torch.zeros_like(cand), cand, m2, torch.tensor(math.inf, device=m2.device))
    if torch._C._functorch.is_functorch_wrapped_tensor(m2):
        masked, threshold = _masked_static(m2, cand, tau)
    else:
        masked, threshold = _masked_compact(m2, cand, tau)
    return M2POMask(mask.bool() & ~masked, cand, m2, threshold)


def m2po_keep_mask(log_ratio, adv, mask, tau: float = 0.04, region: str = "harmful") -> torch.Tensor:
    """``keep`` (B, T) bool: exactly the tokens Algorithm 1 leaves unmasked (valid only).

    See :func:`m2po_mask` for the algorithm; padding positions are False.
    """
    return m2po_mask(log_ratio, adv, mask, tau, region).keep


def waterfill_threshold_tensor(m2, candidates, tau: float) -> torch.Tensor:
    """Exact water-filling threshold t (a 0-d tensor, ``inf`` when within budget).

    Solves ``mean_{i in C} min(M2_i, t^2) = tau`` over the candidates C. With the
    candidate values sorted ``s_1 <= ... <= s_n`` and prefix sums ``S_j``,
    ``f(x) = sum_i min(s_i, x)`` is continuous and non-decreasing, ``f(s_j) = S_j +
    (n - j) s_j``. Let k be the largest j with ``f(s_j) < n tau`` (0 if none); then
    ``t^2 = (n tau - S_k) / (n - k)``, which lies in ``[s_k, s_{k+1}]``.

    Edge cases: no candidates, or ``mean(M2) <= tau`` already: ``inf`` (nothing clipped).
    The cut at the first value (k = 0, every candidate above the solution): ``t^2 = tau``.
    """
    check_positive("tau", tau)
    cand = candidates.bool()
    n_tok = m2.numel()
    if n_tok == 0:
        return torch.tensor(math.inf, dtype=torch.float64, device=m2.device)
    sorted_m2, _, n_cand = _sorted_candidates(m2.detach(), cand)
    s = sorted_m2.double()  # (N,)
    j = torch.arange(1, n_tok + 1, device=m2.device)  # (N,)
    prefix_sum = torch.cumsum(torch.where(torch.isinf(s), torch.zeros_like(s), s), 0)  # (N,)
    n = n_cand.double()
    budget = n * tau
    f = prefix_sum + (n - j) * s  # (N,) f(s_j) for j <= n
    below = (f < budget) & (j <= n_cand)
    k = torch.where(below, j, torch.zeros_like(j)).amax()  # ()
    s_k = torch.cat([prefix_sum.new_zeros(1), prefix_sum])[k]  # S_k, S_0 = 0
    t_sq = (budget - s_k) / (n - k).clamp(min=1)
    total = prefix_sum[n_cand.clamp(min=1) - 1]
    within = (n_cand == 0) | (total <= budget)
    return torch.where(within, torch.full_like(t_sq, math.inf), t_sq.clamp(min=0).sqrt())


def waterfill_threshold(m2, tau: float) -> float:
    """The released code's threshold t for candidate values ``m2`` (any shape), solved exactly.

    Returns ``math.inf`` when ``mean(m2) <= tau`` or ``m2`` is empty. The released code
    (verl fork, ``_solve_tau_from_sorted_delta2``) walks the sorted values with a host
    read per step and returns the breakpoint *below* the solution,
    ``sqrt(s_{k-1} - 1e-12)``, so it clips at least one token more than this exact
    solution; it returns 0.0 when the cut falls at the first value (clipping every
    candidate) and a ``100000`` sentinel (not a tuple, unlike its other branch) when
    empty or within budget. Here: the exact root, ``tau ** 0.5`` at the first value, and
    ``math.inf`` for the two degenerate cases. This reads one number from the device.
    """
    m2 = torch.as_tensor(m2).reshape(-1)
    return float(waterfill_threshold_tensor(m2, torch.ones_like(m2, dtype=torch.bool), tau))
