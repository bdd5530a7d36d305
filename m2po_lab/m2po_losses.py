"""The M2PO family: ``m2po`` (the paper's Algorithm 1), ``m2po_released`` (the authors' verl fork)
and ``m2po_areal`` (AReaL's implementation).

Each has a batch-state function, so its batch statistic (the mask, or the water-filling
threshold) can be decided over a whole optimizer mini-batch, on one process or across
data-parallel ranks (``batch_state(..., group=)``), and the backward pass then run in
micro-batches. Signature and shapes: :mod:`m2po_lab.losses`.
"""

from __future__ import annotations

import math

import torch

from .loss_registry import (
    LossConfig,
    _dual_clip,
    _finish,
    _ppo_clip,
    _prepare,
    _ratio,
    prox_log_ratio,
    register_loss,
)
from .masking import m2po_mask, trust_region_candidates, waterfill_threshold_tensor
from .metrics import masked_mean


def _m2po_metrics(m2, cand, kept, mask, threshold):
    """M2 over the candidates before and after masking; the counts make them mergeable (metrics.SCHEMA)."""
    return {
        "m2po/candidates": cand.sum().float(),
        "m2po/kept_candidates": (cand & kept).sum().float(),
        "m2po/m2_before": masked_mean(m2, cand),
        "m2po/m2_after": masked_mean(m2, cand & kept),
        "m2po/candidate_frac": masked_mean(cand.float(), mask),
        "m2po/threshold": threshold.float(),
    }


def _smallest_masked(abs_lr, masked):
    """min |log r| over the masked tokens, inf if none (0-d, no host sync)."""
    values = torch.where(masked, abs_lr, torch.full_like(abs_lr, math.inf))
    return values.amin() if values.numel() else abs_lr.new_tensor(math.inf)


def _prepare_state(logp, old_logp, adv, mask, cfg, group, prox_logp=None):
    """``_prepare`` (and the proximal log-ratio) for a batch state, plus the error a rank found.

    On one process an input error raises at once. On a rank of ``group`` it is returned
    instead (with empty placeholders), so the exchange raises it on every rank and no
    rank waits for this one.
    """
    try:
        cfg, log_ratio, adv, mask = _prepare(logp.detach(), old_logp, adv, mask, cfg)
        prox = log_ratio if prox_logp is None else prox_log_ratio("m2po_areal", prox_logp, old_logp, mask)
        return cfg, log_ratio, adv, mask, prox, None
    except ValueError as err:
        if group is None:
            raise
        device = logp.device if isinstance(logp, torch.Tensor) else None
        empty = torch.zeros(0, 0, device=device)
        cfg = cfg if isinstance(cfg, LossConfig) else LossConfig()
        return cfg, empty, empty, empty.bool(), empty, err


def _decide(log_ratio, adv, mask, tau, region, rule, group, error=None):
    """(keep, number of candidates, number kept) over this batch, or over ``group``'s ranks."""
    if group is None:
        out = m2po_mask(log_ratio, adv, mask, tau, region, rule)
        return out.keep, out.candidates.sum(), (out.candidates & out.keep).sum()
    from .distributed import global_m2po_mask

    out = global_m2po_mask(log_ratio, adv, mask, group, tau, region, rule, error=error)
    return out.keep, out.num_candidates, out.num_kept


def _m2po_state(logp, old_logp, adv, mask, cfg=None, group=None):
    cfg, log_ratio, adv, mask, _, error = _prepare_state(logp, old_logp, adv, mask, cfg, group)
    return {"keep": _decide(log_ratio, adv, mask, cfg.tau, cfg.region, "algorithm1", group, error)[0]}


@register_loss("m2po", batch_state=_m2po_state)
def m2po_loss(log_ratio, adv, mask, cfg, *, keep=None):
    """M2PO (arXiv 2510.01161, Algorithm 1 and its objective J): second-moment masking, no clip.

    ``J = 1 / sum_i |o_i| * sum_it M_it r_it A_it`` with ``M`` from Algorithm 1
    (:func:`m2po_lab.masking.m2po_mask`: mask the largest ``M2 = (log r)^2`` among the
    candidates until their mean M2 <= tau). Here ``l_it = -M_it r_it A_it``; masked tokens
    keep their place in the ``token-mean`` denominator. ``keep`` (B, T): a mask decided
    over a larger mini-batch (see :func:`batch_state`); None decides it over this batch.
    ``m2po/threshold``: |log r| of the smallest masked candidate here (inf if none).
    """
    lr = log_ratio.detach()
    cand = trust_region_candidates(lr, adv, mask, cfg.region)  # (B, T)
    if keep is None:
        keep = m2po_mask(lr, adv, mask, cfg.tau, cfg.region).keep
    elif keep.shape != mask.shape:
        raise ValueError(f"keep must have the shape of logp {tuple(mask.shape)}, got {tuple(keep.shape)}")
    keep = keep.bool() & mask
    ratio = _ratio(log_ratio, cfg.log_ratio_clamp)
    per_token = torch.where(keep, -adv * ratio, torch.zeros_like(ratio))
    threshold = _smallest_masked(lr.abs(), cand & ~keep)
    extra = _m2po_metrics(lr.square(), cand, keep, mask, threshold)
    return _finish(per_token, mask, mask & ~keep, log_ratio, extra)


def _released_state(logp, old_logp, adv, mask, cfg=None, group=None):
    cfg, log_ratio, adv, mask, _, error = _prepare_state(logp, old_logp, adv, mask, cfg, group)
    cand = trust_region_candidates(log_ratio, adv, mask, cfg.region)
    if group is None:
        return {"threshold": waterfill_threshold_tensor(log_ratio.square(), cand, cfg.tau)}
    from .distributed import global_waterfill_threshold

    return {"threshold": global_waterfill_threshold(log_ratio.square(), cand, group, cfg.tau, error=error)}


@register_loss("m2po_released", batch_state=_released_state)
def m2po_released_loss(log_ratio, adv, mask, cfg, *, threshold=None):
    """M2PO as the authors' released verl fork computes it (arXiv 2510.01161): water-filling, then a PPO clip.

    t solves ``mean_{i in C} min(M2_i, t^2) = tau`` over the harmful candidates C
    (:func:`m2po_lab.masking.waterfill_threshold_tensor`, exact), then
    ``l = max(-A r, -A clip(r, e^-t, e^t))``: the gradient is that of masking the harmful
    tokens with ``|log r| > t``. Optional floors widen the clip to at least
    ``[1 - released_floor_low, 1 + released_floor_high]``. No candidates or
    ``mean M2 <= tau``: t = inf, no clipping. The released code decides t per micro-batch;
    ``threshold`` passes one decided over a mini-batch (see :func:`batch_state`).
    """
    lr = log_ratio.detach()
    cand = trust_region_candidates(lr, adv, mask, cfg.region)
    m2 = lr.square()
    t = waterfill_threshold_tensor(m2, cand, cfg.tau) if threshold is None else torch.as_tensor(threshold)
    t = t.to(device=lr.device, dtype=lr.dtype)
    low, high = torch.exp(-t), torch.exp(t)
    if cfg.released_floor_low is not None:
        low = torch.clamp(low, max=1 - cfg.released_floor_low)
    if cfg.released_floor_high is not None:
        high = torch.clamp(high, min=1 + cfg.released_floor_high)
    ratio = _ratio(log_ratio, cfg.log_ratio_clamp)
    per_token, clipped = _ppo_clip(ratio, adv, low, high)
    extra = _m2po_metrics(m2, cand, ~clipped, mask, t)
    return _finish(per_token, mask, clipped, log_ratio, extra)


def _kept_scale(n_valid, n_kept):
    """``n_valid / n_kept`` (0-d float64): moves the masked tokens out of the token-mean denominator."""
    n_valid = torch.as_tensor(n_valid).double()
    n_kept = torch.as_tensor(n_kept).double().to(n_valid.device)
    return torch.where(n_kept > 0, n_valid / n_kept.clamp(min=1), torch.ones_like(n_valid))


def _areal_state(logp, old_logp, adv, mask, cfg=None, group=None, prox_logp=None):
    cfg, _, adv, mask, prox, error = _prepare_state(logp, old_logp, adv, mask, cfg, group, prox_logp)
    keep, n_valid, n_kept = _decide(prox, adv, mask, cfg.tau, "all", "areal", group, error)
    return {"keep": keep, "kept_scale": _kept_scale(n_valid, n_kept)}


@register_loss("m2po_areal", batch_state=_areal_state, proximal=True)
def m2po_areal_loss(log_ratio, adv, mask, cfg, *, prox_log_ratio=None, keep=None, kept_scale=None):
    """M2PO (arXiv 2510.01161) as AReaL ships it (inclusionAI/AReaL PR #480, ``actor.m2_threshold``).

    A second-moment mask, then AReaL's decoupled PPO objective (AReaL, arXiv 2505.24298).

    From ``areal/engine/ppo/actor.py`` (``grpo_loss_fn``, ``get_m2po_loss_mask``) and
    ``areal/utils/functional.py`` (``ppo_actor_loss_fn``) as merged in PR #480:

    - ``M2_i = (log pi_prox - log pi_behav)^2`` over *every* valid token, where pi_prox is
      the proximal policy (AReaL recomputes it with the parameters at the start of the
      step). Pass it as the keyword ``prox_logp`` (B, T); without it the proximal policy is
      the current one, detached (AReaL's recomputed value on the first update of a step),
      so M2 is the paper's ``(log r)^2``.
    - Mask the largest M2 while the mean of the rest is >= tau (stop at mean < tau,
      strict), always keeping at least one token (:func:`m2po_lab.masking.m2po_mask`,
      ``rule="areal"``; ``tau`` is AReaL's ``m2_threshold``). Decided per loss call (AReaL:
      per micro-batch), or over a mini-batch / across ranks through :func:`batch_state`.
    - ``l_it = w_it * max(-A r_it, -A clip(r_it, 1 - eps_low, 1 + eps_high))`` with
      ``r = pi_theta / pi_prox`` and the detached behaviour weight ``w = pi_prox / pi_behav``;
      ``dual_clip_c`` is AReaL's ``c_clip``. Without ``prox_logp``: ``r = 1`` (with the
      gradient of logp) and ``w = pi_theta / pi_behav``, the clip never acts.
    - Masked tokens leave the denominator: AReaL divides by the kept count. The loss tells
      the aggregation through its values: each kept token's loss is multiplied by
      ``kept_scale = n_valid / n_kept`` (this batch's counts, or the mini-batch's from
      ``batch_state``), so ``aggregate(..., "token-mean")`` over the valid tokens gives
      ``sum_kept l / n_kept`` -- and per micro-batch with the mini-batch's ``num_tokens``,
      AReaL's own micro-batch weighting ``(n_valid_mb / n_valid) sum_kept_mb l / n_kept_mb``.

    Not reproduced: AReaL's optional ``behav_imp_weight_cap``. ``cfg.region`` is not read
    (every valid token is a candidate). Shapes as in :mod:`m2po_lab.losses`; minimised.
    """
    lr = log_ratio.detach()
    prox = lr if prox_log_ratio is None else prox_log_ratio  # (B, T) log pi_prox - log pi_behav
    if keep is None:
        decided = m2po_mask(prox, adv, mask, cfg.tau, "all", "areal").keep
        keep, kept_scale = decided, _kept_scale(mask.sum(), decided.sum())
    elif keep.shape != mask.shape:
        raise ValueError(f"keep must have the shape of logp {tuple(mask.shape)}, got {tuple(keep.shape)}")
    keep = keep.bool() & mask
    if kept_scale is None:
        kept_scale = _kept_scale(mask.sum(), keep.sum())
    ratio = _ratio(log_ratio - prox, cfg.log_ratio_clamp)  # (B, T) pi_theta / pi_prox
    per_token, clipped = _ppo_clip(ratio, adv, 1 - cfg.eps_low, 1 + cfg.eps_high)
    if cfg.dual_clip_c is not None:
        per_token, dual = _dual_clip(per_token, adv, cfg.dual_clip_c)
        clipped = clipped | dual
    weight = _ratio(prox, cfg.log_ratio_clamp).detach() * kept_scale.to(lr)  # (B, T)
    per_token = torch.where(keep, per_token * weight, torch.zeros_like(per_token))
    extra = _m2po_metrics(prox.square(), mask, keep, mask, _smallest_masked(prox.abs(), mask & ~keep))
    return _finish(per_token, mask, mask & ~(keep & ~clipped), log_ratio, extra)
