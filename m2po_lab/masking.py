"""M2PO's second-moment trust region: which tokens to mask, solved exactly and fast.

Source: Zheng, Zhao, Chen, "Prosperity before Collapse" (arXiv 2510.01161),
Algorithm 1 (the paper's mask); the rule of the authors' released verl fork (a
water-filling threshold, then a PPO clip); AReaL's rule (inclusionAI/AReaL PR #480,
``get_m2po_loss_mask`` in ``areal/engine/ppo/actor.py``).

Every solver sorts the candidate second moments once and takes one cumulative sum:
no Python loop over tokens and no host read (``.item()``) in the shape-static paths.
Non-candidates are sorted after every candidate as NaN placeholders (``torch.sort``
orders NaN after +inf on CPU and CUDA), so a candidate whose M2 is +inf (a huge
log-ratio, or a square that overflows) still ranks as a candidate.

Numerics do not depend on the input dtype: log-ratios are taken to float32 (float64
stays float64) before squaring, and prefix sums and budgets are float64. For bf16 and
fp16 inputs the float32 square is exact.

Vocabulary: ``log_ratio = logp - old_logp`` (B, T); ``m2 = log_ratio ** 2``;
``mask`` marks valid (non-padding) tokens; ``keep`` marks the valid tokens whose
gradient survives.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import REGIONS, RULES, _wrapped, as_bool_mask, check_choice, check_positive, widen


class M2POMask(NamedTuple):
    """What Algorithm 1 decided for one batch (all tensors, no host sync)."""

    keep: torch.Tensor  # (B, T) bool: valid and not masked
    candidates: torch.Tensor  # (B, T) bool: the trust-region tokens Algorithm 1 may mask
    m2: torch.Tensor  # (B, T) float32 or float64: (log r)^2
    threshold: torch.Tensor  # () float: |log r| of the smallest masked candidate, inf if none


def _broadcast_adv(adv: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if adv.dim() == 1 and like.dim() == 2 and adv.shape[0] == like.shape[0]:
        return adv[:, None].expand_as(like)  # (B,) -> (B, T)
    if adv.shape != like.shape:
        raise ValueError(f"adv must have shape (B,) or {tuple(like.shape)}, got {tuple(adv.shape)}")
    return adv


def trust_region_candidates(log_ratio, adv, mask, region: str = "harmful") -> torch.Tensor:
    """Tokens M2PO may mask. (B, T) bool.

    ``region="harmful"``: the two quadrants in which PPO's clip could act,
    ``(A > 0 and r > 1) or (A < 0 and r < 1)`` -- the paper (arXiv 2510.01161), the
    authors' released code, and the open PRs for Trinity-RFT (#616) and ms-swift (#9965).
    ``region="all"``: every valid token is a candidate. That is AReaL's candidate set, but
    with Algorithm 1's stopping rule it is *not* AReaL's rule (that one is the loss
    ``m2po_areal``: M2 to a proximal policy, strict ``<``, keeps one token).
    """
    check_choice("region", region, REGIONS)
    mask = as_bool_mask(mask)
    if region == "all":
        return mask
    adv = _broadcast_adv(adv, log_ratio)
    harmful = ((adv > 0) & (log_ratio > 0)) | ((adv < 0) & (log_ratio < 0))  # (B, T)
    return mask & harmful


def _sorted_candidates(m2: torch.Tensor, cand: torch.Tensor):
    """Candidate M2 ascending (+inf included), non-candidates as NaN after them; their order; count."""
    flat = torch.where(cand, m2, torch.full_like(m2, math.nan)).reshape(-1)  # (N,)
    sorted_m2, order = torch.sort(flat, stable=True)  # (N,), (N,) ties keep row-major order
    return sorted_m2, order, cand.sum()


def _cut(sorted_m2: torch.Tensor, n_cand, tau: float, rule: str = "algorithm1"):
    """The cut on ascending values: (k = 1..N, number kept, threshold). No host sync.

    Sorted ascending, the mean of the first k candidates never decreases with k.
    ``algorithm1`` (arXiv 2510.01161, Algorithm 1): keep the largest k whose prefix mean
    is <= tau (k = 0 allowed). ``areal`` (AReaL PR #480): the largest k whose prefix mean
    is < tau, and at least one token. Prefix sums and ``tau * k`` are float64; entries past
    the candidates are NaN and never within budget.
    """
    n = sorted_m2.numel()
    k = torch.arange(1, n + 1, device=sorted_m2.device)  # (N,)
    prefix_sum = torch.cumsum(sorted_m2.double(), 0)  # (N,)
    budget = tau * k.double()  # (N,)
    within = prefix_sum < budget if rule == "areal" else prefix_sum <= budget
    n_kept = torch.where(within, k, torch.zeros_like(k)).amax()  # () largest k within budget
    if rule == "areal":
        n_kept = torch.maximum(n_kept, torch.as_tensor(n_cand, device=k.device).clamp(max=1))
    first_masked = sorted_m2[n_kept.clamp(max=n - 1)]
    inf = torch.full_like(first_masked, math.inf)
    return k, n_kept, torch.where(n_kept < n_cand, first_masked.sqrt(), inf)


def _masked_static(m2, cand, tau, rule="algorithm1"):
    """Shape-static solver (vmap-able): non-candidates sort to the end as NaN."""
    sorted_m2, order, n_cand = _sorted_candidates(m2, cand)
    k, n_kept, threshold = _cut(sorted_m2, n_cand, tau, rule)
    masked_sorted = (k > n_kept) & (k <= n_cand)  # (N,)
    return torch.zeros_like(masked_sorted).scatter(0, order, masked_sorted).view_as(cand), threshold


def cut_candidates(values: torch.Tensor, tau: float, rule: str = "algorithm1"):
    """The cut on a 1-D tensor of candidate M2 values, in their (row-major) order.

    Returns ``(masked, threshold, n_kept)``: (C,) bool, |log r| of the smallest masked
    value (inf if none), the number kept (0-d). Among equal values the later one is
    masked first (a stable sort). Shared by the direct path and the data-parallel one
    (:mod:`m2po_lab.distributed`), so both decide bit for bit the same.
    """
    if values.numel() == 0:
        inf = torch.tensor(math.inf, dtype=values.dtype, device=values.device)
        none = torch.zeros((), dtype=torch.long, device=values.device)
        return torch.zeros(0, dtype=torch.bool, device=values.device), inf, none
    sorted_m2, order = torch.sort(values, stable=True)  # (C,), (C,) ties keep row-major order
    k, n_kept, threshold = _cut(sorted_m2, values.numel(), tau, rule)
    masked = torch.zeros(values.shape, dtype=torch.bool, device=values.device).scatter(0, order, k > n_kept)
    return masked, threshold, n_kept


def _masked_compact(m2, cand, tau, rule="algorithm1"):
    """The same cut on the candidates only: half the sort when half the tokens are candidates.

    Reads one number from the device (the candidate count, to size the compacted tensor).
    """
    masked_values, threshold, _ = cut_candidates(m2[cand], tau, rule)  # (C,)
    return torch.zeros_like(cand).masked_scatter(cand, masked_values), threshold


def _prepare_mask_inputs(log_ratio, adv, mask, tau, region, rule):
    check_positive("tau", tau)
    check_choice("rule", rule, RULES)
    mask = as_bool_mask(mask)
    log_ratio = widen(log_ratio.detach())  # float32 or wider, whatever the input dtype
    cand = trust_region_candidates(log_ratio, adv, mask, region)  # (B, T)
    return mask, cand, log_ratio.square()


def m2po_mask(log_ratio, adv, mask, tau: float = 0.04, region: str = "harmful", rule: str = "algorithm1") -> M2POMask:
    """Paper Algorithm 1 (arXiv 2510.01161), as one sort and one cumulative sum.

    Algorithm 1: ``M = all True; T = candidates; while mean_{i in T} M2_i > tau: drop
    argmax_T M2_i from T and set its M to False``. Sorted ascending, the mean of the
    first k candidates never decreases with k, so the greedy loop stops at the largest
    k whose prefix mean is <= tau and masks the rest. This function finds that k from
    one ``torch.sort`` and one ``torch.cumsum``. Ties at the cut: the number masked is
    Algorithm 1's and every masked token's M2 is >= every kept candidate's; among
    candidates with equal M2 the later one in row-major order is masked first (a stable
    sort, so both paths below break ties the same way). A candidate with M2 = +inf is
    always masked.

    ``rule="areal"``: AReaL's stopping rule (PR #480, ``get_m2po_loss_mask``): mask the
    largest while the mean is >= tau (stop at mean < tau, strict), always keeping at least
    one candidate (AReaL's own ties fall to an unstable sort; here the same stable order).

    Two equivalent paths: called directly, it sorts the candidates only, reading one
    number (their count) from the device; under ``torch.func`` transforms (``vmap``) it
    sorts every token with non-candidates as NaN placeholders, so shapes stay static and
    nothing is read from the device. M2 is float32 (float64 for float64 input), prefix
    sums float64; a decision can differ from exact arithmetic only when a prefix mean
    equals tau to ~1e-16.

    Args:
        log_ratio: (B, T) ``logp - old_logp`` (detached inside), any float dtype.
        adv: (B,) or (B, T) advantages (only their sign is used).
        mask: (B, T) valid tokens (bool, or 0/1 values).
        tau: the second-moment budget, > 0 (paper: 0.04).
        region: "harmful" (paper) or "all" (every valid token).
        rule: "algorithm1" (paper) or "areal".
    """
    mask, cand, m2 = _prepare_mask_inputs(log_ratio, adv, mask, tau, region, rule)
    if m2.numel() == 0:
        return M2POMask(torch.zeros_like(cand), cand, m2, torch.tensor(math.inf, dtype=m2.dtype, device=m2.device))
    if _wrapped(m2):
        masked, threshold = _masked_static(m2, cand, tau, rule)
    else:
        masked, threshold = _masked_compact(m2, cand, tau, rule)
    return M2POMask(mask & ~masked, cand, m2, threshold)


def m2po_keep_mask(log_ratio, adv, mask, tau: float = 0.04, region: str = "harmful") -> torch.Tensor:
    """``keep`` (B, T) bool: exactly the tokens Algorithm 1 leaves unmasked (valid only).

    See :func:`m2po_mask` for the algorithm; padding positions are False.
    """
    return m2po_mask(log_ratio, adv, mask, tau, region).keep


def waterfill_threshold_tensor(m2, candidates, tau: float) -> torch.Tensor:
    """Exact water-filling threshold t (a 0-d float64 tensor, ``inf`` when within budget).

    Solves ``mean_{i in C} min(M2_i, t^2) = tau`` over the candidates C. With the
    candidate values sorted ``s_1 <= ... <= s_n`` and prefix sums ``S_j``,
    ``f(x) = sum_i min(s_i, x)`` is continuous and non-decreasing, ``f(s_j) = S_j +
    (n - j) s_j``. Let k be the largest j with ``f(s_j) < n tau`` (0 if none); then
    ``t^2 = (n tau - S_k) / (n - k)``, which lies in ``[s_k, s_{k+1}]``.

    Edge cases: no candidates, or ``mean(M2) <= tau`` already: ``inf`` (nothing clipped).
    The cut at the first value (k = 0, every candidate above the solution): ``t^2 = tau``.
    A candidate with M2 = +inf counts (it is clipped, the budget of the others is solved).
    ``m2`` is taken to float32 or wider first, sums are float64.
    """
    check_positive("tau", tau)
    cand = as_bool_mask(candidates, "candidates")
    n_tok = m2.numel()
    if n_tok == 0:
        return torch.tensor(math.inf, dtype=torch.float64, device=m2.device)
    sorted_m2, _, n_cand = _sorted_candidates(widen(m2.detach()), cand)
    s = sorted_m2.double()  # (N,) candidates ascending, then NaN placeholders
    j = torch.arange(1, n_tok + 1, device=m2.device)  # (N,)
    prefix_sum = torch.cumsum(torch.where(torch.isnan(s), torch.zeros_like(s), s), 0)  # (N,)
    n = n_cand.double()
    budget = n * tau
    f = prefix_sum + (n - j) * s  # (N,) f(s_j) for j <= n (NaN where inf * 0: never below)
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
