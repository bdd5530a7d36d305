"""Every policy loss the paper compares, one signature, one registry.

    loss_fn(logp, old_logp, adv, mask, cfg=None, **batch_state) -> (per_token_loss, metrics)

- ``logp`` (B, T): log pi_theta of the sampled tokens (carries the gradient).
- ``old_logp`` (B, T): log pi_behav, the (possibly stale) policy that sampled them.
- ``adv`` (B,) or (B, T): advantages (detached). ``mask`` (B, T): valid tokens.
- ``per_token_loss`` (B, T): the quantity to *minimise* (the negated surrogate),
  zero at padding; reduce it with :func:`m2po_lab.aggregation.aggregate`.
- ``metrics``: detached 0-d tensors under namespaced keys; the logger syncs them once.

``log_ratio = logp - old_logp`` and ``ratio = exp(log_ratio)``. With ``logp == old_logp``
every loss here has the gradient of the on-policy policy gradient ``-A * grad logp``.

``clip/frac`` is the fraction of valid tokens whose gradient the method zeroes (clipped
or masked). ``batch_state`` lets a trainer decide M2PO's mask over a whole optimizer
mini-batch and then run the backward pass in micro-batches (see :func:`batch_state`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from ._checks import REGIONS, check_choice, check_policy_inputs, check_positive
from .masking import m2po_mask, trust_region_candidates, waterfill_threshold_tensor
from .metrics import importance_metrics, masked_mean


@dataclass(frozen=True)
class LossConfig:
    """Hyperparameters of every registered loss (each loss reads its own fields)."""

    eps_low: float = 0.2
    """GRPO/PPO lower clip, r >= 1 - eps_low (PPO arXiv 1707.06347 Eq. 7)."""
    eps_high: float = 0.2
    """GRPO/PPO upper clip, r <= 1 + eps_high; DAPO's clip-higher uses 0.28 (arXiv 2503.14476)."""
    dual_clip_c: float | None = None
    """Dual-clip bound c > 1 on -A*r for A < 0 (Ye et al., arXiv 1912.09729; verl uses 3.0); None: off."""
    gspo_eps_low: float = 3e-4
    """GSPO lower clip of the sequence ratio (arXiv 2507.18071, its experiments' setting)."""
    gspo_eps_high: float = 4e-4
    """GSPO upper clip of the sequence ratio (arXiv 2507.18071, its experiments' setting)."""
    tis_cap: float = 2.0
    """Truncated IS cap C in min(r, C) (Yao et al. 2025, 'off-policy RL training'; verl's default 2)."""
    mis_low: float = 0.5
    """Masked IS: tokens with r < mis_low get no gradient (IcePop's alpha = 0.5)."""
    mis_high: float = 5.0
    """Masked IS: tokens with r > mis_high get no gradient (IcePop's beta = 5)."""
    cispo_eps_low: float = 1.0
    """CISPO lower clip of the detached weight; 1.0 = no lower bound (MiniMax-M1, arXiv 2506.13585)."""
    cispo_eps_high: float = 0.28
    """CISPO upper clip of the detached weight (MiniMax-M1 tunes only this one)."""
    tau: float = 0.04
    """M2PO second-moment budget (arXiv 2510.01161, used for every model in the paper)."""
    region: str = "harmful"
    """M2PO candidates: 'harmful' = (A>0, r>1) or (A<0, r<1) (paper); 'all' (AReaL)."""
    released_floor_low: float | None = None
    """m2po_released: minimum lower clip width (released code has 0.3, switched off); None: off."""
    released_floor_high: float | None = None
    """m2po_released: minimum upper clip width (released code has 0.5, switched off); None: off."""
    log_ratio_clamp: float | None = 20.0
    """Safety clamp on the log-ratio *value* (verl clamps at 20); the gradient still flows."""

    def __post_init__(self):
        for name in ("eps_low", "eps_high", "gspo_eps_low", "gspo_eps_high", "cispo_eps_high"):
            check_positive(name, getattr(self, name))
        for name in ("eps_low", "gspo_eps_low"):
            if getattr(self, name) >= 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)!r}")
        if not 0 < self.cispo_eps_low <= 1:
            raise ValueError(f"cispo_eps_low must be in (0, 1], got {self.cispo_eps_low!r}")
        if self.dual_clip_c is not None and not self.dual_clip_c > 1:
            raise ValueError(f"dual_clip_c must be None or > 1, got {self.dual_clip_c!r}")
        check_positive("tis_cap", self.tis_cap)
        check_positive("mis_low", self.mis_low)
        if not self.mis_high > self.mis_low:
            raise ValueError(f"mis_high must be > mis_low={self.mis_low!r}, got {self.mis_high!r}")
        check_positive("tau", self.tau)
        check_choice("region", self.region, REGIONS)
        for name in ("released_floor_low", "released_floor_high", "log_ratio_clamp"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))


LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
LOSSES: dict[str, LossFn] = {}
_BATCH_STATE: dict[str, Callable] = {}


def register_loss(name: str, batch_state: Callable | None = None):
    """Register a loss under ``name``, optionally with a mini-batch-scope state function.

    Decorates the pure core ``compute(log_ratio, adv, mask, cfg, **state)`` (log_ratio and
    adv (B, T), mask bool (B, T), padding already zeroed, cfg a LossConfig) and returns the
    public loss with the package signature, which validates its inputs and calls the core.
    The core stays reachable as ``LOSSES[name].compute``: free of host syncs and Python
    branches on data, it can be ``torch.func.vmap``-ed over independent runs (the toy
    study trains 45 runs at once that way).
    """

    def deco(compute: Callable) -> LossFn:
        @functools.wraps(compute)
        def loss_fn(logp, old_logp, adv, mask, cfg=None, **state):
            cfg, log_ratio, adv, mask = _prepare(logp, old_logp, adv, mask, cfg)
            return compute(log_ratio, adv, mask, cfg, **state)

        loss_fn.compute = compute
        LOSSES[name] = loss_fn
        if batch_state is not None:
            _BATCH_STATE[name] = batch_state
        return loss_fn

    return deco


def get_loss(name: str) -> LossFn:
    """The registered loss ``name``; ``ValueError`` listing the names otherwise."""
    check_choice("loss", name, LOSSES)
    return LOSSES[name]


# ---------------------------------------------------------------- shared pieces
def _prepare(logp, old_logp, adv, mask, cfg):
    """Validate, zero the padding (so no NaN reaches a gradient), form log_ratio."""
    cfg = LossConfig() if cfg is None else cfg
    if not isinstance(cfg, LossConfig):
        raise ValueError(f"cfg must be a LossConfig or None, got {type(cfg).__name__}")
    adv, mask = check_policy_inputs(logp, old_logp, adv, mask)
    zero = torch.zeros_like(logp)
    logp = torch.where(mask, logp, zero)  # (B, T)
    old_logp = torch.where(mask, old_logp.detach().to(logp.dtype), zero)  # (B, T)
    adv = torch.where(mask, adv.detach().to(logp.dtype), zero)  # (B, T)
    return cfg, logp - old_logp, adv, mask


def _ratio(log_ratio: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """exp(log_ratio), its value clamped to exp(+-clamp); gradient ratio * grad(log_ratio)."""
    value = log_ratio.detach()
    if clamp is not None:
        value = value.clamp(-clamp, clamp)
    return value.exp() * torch.exp(log_ratio - log_ratio.detach())  # (B, T)


def _grad_carrier(log_ratio: torch.Tensor) -> torch.Tensor:
    """Equals 1; its gradient is grad(logp). Times a detached weight w: value w, gradient w * grad logp."""
    return torch.exp(log_ratio - log_ratio.detach())


def _finish(per_token, mask, zero_grad, log_ratio, extra=None):
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    metrics = importance_metrics(log_ratio, mask)
    metrics["clip/frac"] = masked_mean(zero_grad.float(), mask)
    metrics.update(extra or {})
    return per_token, metrics


def _ppo_clip(ratio, adv, low, high):
    """max(-A r, -A clip(r, low, high)) and where the clipped (gradient-free) branch wins."""
    pg_loss1 = -adv * ratio  # (B, T)
    pg_loss2 = -adv * torch.clamp(ratio, low, high)  # (B, T)
    return torch.maximum(pg_loss1, pg_loss2), pg_loss2 > pg_loss1


# ---------------------------------------------------------------- the losses
@register_loss("grpo")
def grpo_loss(log_ratio, adv, mask, cfg):
    """GRPO / PPO clipped surrogate, optional clip-higher and dual clip.

    ``l = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))``; with ``dual_clip_c = c``,
    ``l = min(l, -A c)`` for A < 0. Sources: PPO (arXiv 1707.06347, Eq. 7), GRPO
    (arXiv 2402.03300, Eq. 3), clip-higher (DAPO, arXiv 2503.14476), dual clip
    (arXiv 1912.09729). Shapes as in the module docstring; minimised.
    """
    ratio = _ratio(log_ratio, cfg.log_ratio_clamp)
    per_token, clipped = _ppo_clip(ratio, adv, 1 - cfg.eps_low, 1 + cfg.eps_high)
    extra = {
        "clip/frac_high": masked_mean((clipped & (adv > 0)).float(), mask),
        "clip/frac_low": masked_mean((clipped & (adv < 0)).float(), mask),
    }
    if cfg.dual_clip_c is not None:
        pg_loss3 = -adv * cfg.dual_clip_c  # (B, T)
        dual = (adv < 0) & (pg_loss3 < per_token)
        per_token = torch.where(dual, pg_loss3, per_token)
        clipped = clipped | dual
        extra["clip/frac_dual"] = masked_mean(dual.float(), mask)
    return _finish(per_token, mask, clipped, log_ratio, extra)


@register_loss("no_tr")
def no_trust_region_loss(log_ratio, adv, mask, cfg):
    """Plain importance-weighted policy gradient, no trust region: ``l = -A r``.

    The paper's "GRPO no TR" (arXiv 2510.01161, Fig. 1): stale data first helps,
    then training collapses. Shapes as in the module docstring; minimised.
    """
    per_token = -adv * _ratio(log_ratio, cfg.log_ratio_clamp)
    return _finish(per_token, mask, torch.zeros_like(mask), log_ratio)


@register_loss("gspo")
def gspo_loss(log_ratio, adv, mask, cfg):
    """GSPO, sequence-level ratio (arXiv 2507.18071, in its GSPO-token form).

    ``s_i = exp(mean_t log r_it)`` over the valid tokens of sequence i;
    ``s_it = sg(s_i) * pi_theta(y_it) / sg(pi_theta(y_it))`` (value s_i, gradient
    ``s_i grad log pi_it``); ``l_it = max(-A s_it, -A clip(s_it, 1 - eps, 1 + eps))`` with
    GSPO's small range (3e-4, 4e-4). Pair it with ``seq-mean-token-mean`` aggregation to get
    GSPO's ``1/|y_i|`` weighting. ``clip/frac`` counts tokens of clipped sequences.
    """
    lengths = mask.sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
    valid_lr = torch.where(mask, log_ratio.detach(), torch.zeros_like(log_ratio))  # (B, T)
    seq_log_ratio = valid_lr.sum(-1, keepdim=True) / lengths  # (B, 1)
    token_seq_log_ratio = seq_log_ratio + log_ratio - log_ratio.detach()  # (B, T)
    seq_ratio = _ratio(token_seq_log_ratio, cfg.log_ratio_clamp)  # (B, T)
    per_token, clipped = _ppo_clip(seq_ratio, adv, 1 - cfg.gspo_eps_low, 1 + cfg.gspo_eps_high)
    seq_clipped = masked_mean(clipped.any(-1).float(), mask.any(-1))
    return _finish(per_token, mask, clipped, log_ratio, {"gspo/seq_clip_frac": seq_clipped})


@register_loss("tis")
def tis_loss(log_ratio, adv, mask, cfg):
    """Truncated importance sampling: ``l = -sg(min(r, C)) * A``, gradient ``-min(r, C) A grad logp``.

    Source: Yao et al. 2025 ("Your efficient RL framework secretly brings you off-policy
    RL training"), verl's ``rollout_is`` token truncation; C = ``tis_cap`` (2). No token
    loses its gradient; ``is/weight_clip_frac`` counts the truncated weights.
    """
    ratio = _ratio(log_ratio, cfg.log_ratio_clamp).detach()
    weight = ratio.clamp(max=cfg.tis_cap)  # (B, T)
    per_token = -adv * weight * _grad_carrier(log_ratio)
    extra = {"is/weight_clip_frac": masked_mean((ratio > cfg.tis_cap).float(), mask)}
    return _finish(per_token, mask, torch.zeros_like(mask), log_ratio, extra)


@register_loss("mis")
def mis_loss(log_ratio, adv, mask, cfg):
    """Masked importance sampling (IcePop): ``l = -A r`` where ``mis_low <= r <= mis_high``, else 0.

    Tokens whose ratio leaves [0.5, 5] (IcePop's alpha, beta; inclusionAI Ring-1T report,
    2025; verl's ``rollout_is`` mask mode) get no gradient and count in ``clip/frac``.
    """
    ratio = _ratio(log_ratio, cfg.log_ratio_clamp)
    in_range = (ratio.detach() >= cfg.mis_low) & (ratio.detach() <= cfg.mis_high)  # (B, T)
    per_token = torch.where(in_range, -adv * ratio, torch.zeros_like(ratio))
    return _finish(per_token, mask, ~in_range, log_ratio)


@register_loss("cispo")
def cispo_loss(log_ratio, adv, mask, cfg):
    """CISPO: ``l = -sg(clip(r, 1 - eps_low, 1 + eps_high)) * A``, gradient through log pi only.

    MiniMax-M1 (arXiv 2506.13585, the CISPO objective): the weight is clipped and detached, so every
    token keeps a gradient ``-clip(r) A grad logp`` (``clip/frac`` is 0);
    ``is/weight_clip_frac`` counts clipped weights.
    """
    ratio = _ratio(log_ratio, cfg.log_ratio_clamp).detach()
    weight = ratio.clamp(1 - cfg.cispo_eps_low, 1 + cfg.cispo_eps_high)  # (B, T)
    per_token = -adv * weight * _grad_carrier(log_ratio)
    clipped_w = (ratio < 1 - cfg.cispo_eps_low) | (ratio > 1 + cfg.cispo_eps_high)
    extra = {"is/weight_clip_frac": masked_mean(clipped_w.float(), mask)}
    return _finish(per_token, mask, torch.zeros_like(mask), log_ratio, extra)


def _m2po_metrics(m2, cand, kept, mask, threshold):
    return {
        "m2po/m2_before": masked_mean(m2, cand),
        "m2po/m2_after": masked_mean(m2, cand & kept),
        "m2po/m2_all": masked_mean(m2, mask),
        "m2po/mask_frac": masked_mean((mask & ~kept).float(), mask),
        "m2po/candidate_frac": masked_mean(cand.float(), mask),
        "m2po/threshold": threshold.float(),
    }


def _m2po_state(logp, old_logp, adv, mask, cfg=None):
    cfg, log_ratio, adv, mask = _prepare(logp.detach(), old_logp, adv, mask, cfg)
    return {"keep": m2po_mask(log_ratio, adv, mask, cfg.tau, cfg.region).keep}


@register_loss("m2po", batch_state=_m2po_state)
def m2po_loss(log_ratio, adv, mask, cfg, *, keep=None):
    """M2PO (arXiv 2510.01161, Algorithm 1 and its objective J): second-moment masking, no clip.

    ``J = 1 / sum_i |o_i| * sum_it M_it r_it A_it`` with ``M`` from Algorithm 1
    (:func:`m2po_lab.masking.m2po_mask`: mask the largest ``M2 = (log r)^2`` among the
    candidates until their mean M2 <= tau). Here ``l_it = -M_it r_it A_it``; masked tokens
    keep their place in the ``token-mean`` denominator. ``keep`` (B, T): a mask decided
    over a larger mini-batch (see :func:`batch_state`); None decides it over this batch.
    ``m2po/threshold``: |log r| of the smallest masked candidate (inf if none).
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
    m2 = lr.square()
    masked_abs = torch.where(cand & ~keep, lr.abs(), torch.full_like(lr, float("inf")))
    threshold = masked_abs.amin() if masked_abs.numel() else lr.new_tensor(float("inf"))
    extra = _m2po_metrics(m2, cand, keep, mask, threshold)
    return _finish(per_token, mask, mask & ~keep, log_ratio, extra)


def _released_state(logp, old_logp, adv, mask, cfg=None):
    cfg, log_ratio, adv, mask = _prepare(logp.detach(), old_logp, adv, mask, cfg)
    cand = trust_region_candidates(log_ratio, adv, mask, cfg.region)
    return {"threshold": waterfill_threshold_tensor(log_ratio.square(), cand, cfg.tau)}


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


def batch_state(name: str, logp, old_logp, adv, mask, cfg=None) -> dict[str, torch.Tensor]:
    """Decide a loss's batch-level quantities over a whole optimizer mini-batch.

    M2PO's M2 is a batch statistic (arXiv 2510.01161, Algorithm 1): to apply it to the
    mini-batch while the backward pass runs in micro-batches, compute this once on the
    mini-batch's (detached) log-probs, then pass ``slice_state(state, rows)`` as keyword
    arguments to the loss of each micro-batch. Losses without batch statistics return {}.
    """
    get_loss(name)
    fn = _BATCH_STATE.get(name)
    return {} if fn is None else fn(logp, old_logp, adv, mask, cfg)


def slice_state(state: dict[str, torch.Tensor], rows) -> dict[str, torch.Tensor]:
    """The part of a :func:`batch_state` for the micro-batch ``rows`` (0-d values are shared)."""
    return {k: (v if v.dim() == 0 else v[rows]) for k, v in state.items()}
