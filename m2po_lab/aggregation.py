"""Turn a per-token loss into a scalar: verl 0.9.1's ``agg_loss`` modes, plus Dr.GRPO's constant.

For gradient accumulation pass the *global* counts of the whole optimizer mini-batch
(``num_tokens``, ``num_seqs``; across data-parallel ranks
:func:`m2po_lab.distributed.global_batch_info` computes them, with ``dp_size``): then the
sum of the micro-batch losses equals the loss of the mini-batch in one piece, whatever
the split (a test checks it). Sums and counts are float32 or wider whatever the input
dtype (a bf16 or fp16 per-token loss gives the float32 answer).
"""

from __future__ import annotations

import torch

from ._checks import as_bool_mask, check_choice, check_count, check_positive, widen

AGG_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
    "token-sum",
    "dr-grpo",
)


def _div(num: torch.Tensor, den) -> torch.Tensor:
    """num / den, with 0 / 0 = 0 (an empty batch: its numerator is the empty sum); no NaN gradient."""
    den = torch.as_tensor(den, dtype=num.dtype, device=num.device)
    return num / torch.where(den > 0, den, torch.ones_like(den))


def aggregate(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    num_tokens: int | torch.Tensor | None = None,
    num_seqs: int | torch.Tensor | None = None,
    norm_const: float | None = None,
    dp_size: int = 1,
) -> torch.Tensor:
    """Scalar loss from a (B, T) per-token loss; the verl-named modes equal verl 0.9.1's ``agg_loss``.

    With ``l_it`` the loss, ``|o_i|`` the valid length of row i and ``S`` the number of
    rows with at least one valid token (verl excludes fully masked rows):

    - ``token-mean``: ``sum_it l_it / num_tokens`` (default ``sum_it mask_it``): GRPO as in
      DAPO; M2PO's ``1 / sum_i |o_i|``, so tokens M2PO masks stay in the denominator.
    - ``token-sum``: ``sum_it l_it``.
    - ``seq-mean-token-mean``: ``sum_i (sum_t l_it / |o_i|) / num_seqs`` (default S): original
      GRPO; GSPO. An empty row contributes 0.
    - ``seq-mean-token-sum``: ``sum_it l_it / num_seqs`` (default S).
    - ``seq-mean-token-sum-norm``: ``sum_it l_it / (num_seqs * norm_const)`` (defaults S, T).
    - ``dr-grpo``: ``sum_it l_it / (num_seqs * norm_const)`` with ``num_seqs`` defaulting to B,
      *every* row, empty ones too: Dr.GRPO's constant normaliser (arXiv 2503.20783) as TRL 1.16
      computes it (``loss_type="dr_grpo"``: ``sum / (B * max_completion_length)``, in
      ``trl/trainer/grpo_trainer.py``); pass the maximum generation length as ``norm_const``.

    Every mode is multiplied by ``dp_size``, as verl does for engines that average
    gradients over data-parallel ranks (DDP, FSDP): each rank's loss is then its share of
    the global loss times the number of ranks. Source: verl 0.9.1
    ``verl/trainer/ppo/core_algos.py`` ``agg_loss(loss_mat, loss_mask, loss_agg_mode,
    dp_size, batch_num_tokens, global_batch_size, loss_scale_factor)``: ``num_tokens`` is
    its ``batch_num_tokens``, ``num_seqs`` its ``global_batch_size``, ``norm_const`` its
    ``loss_scale_factor``. Deliberate differences: a batch with nothing to count (no valid
    token, or no non-empty row) has loss 0 where verl divides 0 by 0 (NaN); padding never
    leaks a NaN (verl's seq modes multiply by the mask); verl adds 1e-8 to ``|o_i|``
    (a relative 1e-8 that float32 does not show).

    Args:
        per_token_loss: (B, T), any float dtype; values at padding are ignored.
        mask: (B, T) valid tokens (bool, or 0/1 values).
        num_tokens / num_seqs: global counts when this is one micro-batch (or one rank's
            share) of a larger mini-batch (defaults: this batch's counts). Must be > 0, or 0
            for a batch with nothing to count; a ValueError names the argument otherwise.
        norm_const: constant length for ``seq-mean-token-sum-norm`` and ``dr-grpo`` (> 0).
        dp_size: data-parallel world size when the engine averages gradients (>= 1); with
            dp_size > 1 the mode's count (``num_tokens`` or ``num_seqs``) is required, as in verl.
    """
    mask, loss = _checked(per_token_loss, mask, mode, num_tokens, num_seqs, norm_const, dp_size)
    return _reduce(loss, mask, mode, num_tokens, num_seqs, norm_const) * dp_size


def _checked(per_token_loss, mask, mode, num_tokens, num_seqs, norm_const, dp_size):
    """Validated (bool mask, per-token loss in float32 or wider, zero at padding)."""
    check_choice("mode", mode, AGG_MODES)
    if per_token_loss.shape != mask.shape or per_token_loss.dim() != 2:
        raise ValueError(
            f"per_token_loss and mask must both have shape (B, T); got {tuple(per_token_loss.shape)} "
            f"and {tuple(mask.shape)}"
        )
    if isinstance(dp_size, bool) or not isinstance(dp_size, int) or dp_size < 1:
        raise ValueError(f"dp_size must be an integer >= 1, got {dp_size!r}")
    if norm_const is not None:
        check_positive("norm_const", norm_const)
    needed = {"token-mean": ("num_tokens", num_tokens), "token-sum": (None, 0)}.get(mode, ("num_seqs", num_seqs))
    if dp_size > 1 and needed[1] is None:
        raise ValueError(f"{needed[0]} (the count over every rank) is required when dp_size > 1, as in verl")
    mask = as_bool_mask(mask)
    per_token_loss = widen(per_token_loss)
    return mask, torch.where(mask, per_token_loss, torch.zeros_like(per_token_loss))  # (B, T)


def _reduce(loss, mask, mode, num_tokens, num_seqs, norm_const):
    """The mode's reduction of a (B, T) loss that is zero at padding (before the dp_size factor)."""
    B, T = loss.shape
    if mode == "token-sum":
        return loss.sum()
    if mode == "token-mean":
        return _div(loss.sum(), check_count("num_tokens", num_tokens, mask.sum()))
    const = T if norm_const is None else norm_const
    if mode == "dr-grpo":
        rows = check_count("num_seqs", num_seqs, torch.tensor(B, device=loss.device))
        return _div(loss.sum(), torch.as_tensor(rows, device=loss.device) * const)
    lengths = mask.sum(-1)  # (B,) valid tokens per row
    seqs = check_count("num_seqs", num_seqs, (lengths > 0).sum())
    per_seq = _div(loss.sum(-1), lengths) if mode == "seq-mean-token-mean" else loss.sum(-1)  # (B,)
    total = _div(per_seq.sum(), seqs)
    return _div(total, const) if mode == "seq-mean-token-sum-norm" else total
