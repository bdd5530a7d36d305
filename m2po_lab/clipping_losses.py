"""The clipping-family losses: GRPO/PPO, no trust region, GSPO, TIS, MIS (IcePop) and CISPO.

Each is registered by name in :mod:`m2po_lab.loss_registry`; the signature, shapes and the
meaning of ``clip/frac`` are in :mod:`m2po_lab.losses`.
"""

from __future__ import annotations

import torch

from .loss_registry import (
    _dual_clip,
    _finish,
    _grad_carrier,
    _ppo_clip,
    _ratio,
    register_loss,
)
from .metrics import masked_mean


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
        per_token, dual = _dual_clip(per_token, adv, cfg.dual_clip_c)
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
