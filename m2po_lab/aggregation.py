"""Turn a per-token loss into a scalar (verl's ``loss_agg_mode`` names).

For gradient accumulation pass the *global* counts of the whole optimizer mini-batch
(``num_tokens``, ``num_seqs``): then the sum of the micro-batch losses equals the loss
of the mini-batch in one piece, whatever the split (a test checks it).
"""

from __future__ import annotations

import torch

from ._checks import check_choice

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    num_tokens: int | torch.Tensor | None = None,
    num_seqs: int | None = None,
    norm_const: float | None = None,
) -> torch.Tensor:
    """Scalar loss from a (B, T) per-token loss.

    - ``token-mean``: ``sum_it l_it / sum_it mask_it`` (GRPO as in DAPO; M2PO's
      ``1 / sum_i |o_i|``, so tokens M2PO masks stay in the denominator).
    - ``seq-mean-token-mean``: ``1/B sum_i (sum_t l_it / |o_i|)`` (original GRPO; GSPO).
    - ``seq-mean-token-sum``: ``1/B sum_i sum_t l_it``.
    - ``seq-mean-token-sum-norm``: ``sum_it l_it / (B * norm_const)``, Dr.GRPO's constant
      normaliser (arXiv 2503.20783), ``norm_const`` defaulting to T (the padded length;
      pass the maximum generation length to keep it constant). Unlike verl's mode of the
      same name we also divide by B, so the scale does not grow with the batch.

    Args:
        per_token_loss: (B, T), zero at padding.
        mask: (B, T) valid tokens.
        num_tokens / num_seqs: global counts when this is one micro-batch of a larger
            mini-batch (defaults: this batch's counts).
        norm_const: constant length for ``seq-mean-token-sum-norm``.
    """
    check_choice("mode", mode, AGG_MODES)
    if per_token_loss.shape != mask.shape or per_token_loss.dim() != 2:
        raise ValueError(
            f"per_token_loss and mask must both have shape (B, T); got {tuple(per_token_loss.shape)} "
            f"and {tuple(mask.shape)}"
        )
    m = mask.to(per_token_loss.dtype)
    loss = per_token_loss * m  # (B, T)
    B, T = loss.shape
    seqs = B if num_seqs is None else num_seqs
    if mode == "token-mean":
        denom = m.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=loss.dtype)
        return loss.sum() / denom.clamp(min=1)
    if mode == "seq-mean-token-mean":
        per_seq = loss.sum(-1) / m.sum(-1).clamp(min=1)  # (B,)
        return per_seq.sum() / max(seqs, 1)
    if mode == "seq-mean-token-sum":
        return loss.sum() / max(seqs, 1)
    const = T if norm_const is None else norm_const
    if const <= 0:
        raise ValueError(f"norm_const must be > 0, got {norm_const!r}")
    return loss.sum() / (max(seqs, 1) * const)
