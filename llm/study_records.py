"""What a loss with no trust region amplifies: per-update records of the tokens with large weights.

The LLM trainer logs, beside ``tokens/zeroed`` (what the loss zeroed), two things the
staleness study reads (docs/llm.md):

- every update, ``amp/frac`` and ``amp/weight_share``: the tokens with A > 0 and
  r > ``AMP_RATIO`` that kept their gradient -- tokens whose probability the current
  policy has already raised above the stale policy's, pushed up again with weight r --
  as a fraction of the valid tokens, and as their share of sum r |A| over every token
  that kept a gradient (how much of the update they steer);
- every ``hist_every`` updates, ``tokens/amplified``: up to 16 of the tokens that kept
  their gradient with the largest r, decoded in context (what no_tr amplified; what
  M2PO kept).

All from tensors the update already holds; the scalars are 0-d tensors, read with the
update's one host sync.
"""

from __future__ import annotations

import math

import torch

from m2po_lab.metrics import TOKENS_AMPLIFIED

AMP_RATIO = 2.0
"""r above which a kept token with A > 0 counts as amplified (log r > 0.69, M2 > 0.48: 12 x tau)."""
AMP_KEY = TOKENS_AMPLIFIED
"""The record's key in a metrics row."""


def _kept(mask: torch.Tensor, zeroed: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """(b, R) bool: valid tokens that got a gradient (not zeroed by the loss, advantage != 0)."""
    return mask & ~zeroed & (adv[:, None] != 0)


def amplified_scalars(mask: torch.Tensor, zeroed: torch.Tensor, log_ratio: torch.Tensor,
                      adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """``amp/frac`` and ``amp/weight_share`` of one mini-batch (0-d tensors).

    mask, zeroed (b, R) bool; log_ratio (b, R), 0 at invalid tokens; adv (b,).
    weight_share = sum_{amp} r |A| / sum_{kept} r |A| (0 when nothing kept a gradient).
    """
    kept = _kept(mask, zeroed, adv)  # (b, R)
    lr = log_ratio.detach().float()
    a = adv.float()[:, None].expand_as(lr)  # (b, R)
    amp = kept & (a > 0) & (lr > math.log(AMP_RATIO))  # (b, R)
    w = torch.where(kept, lr.clamp(max=30).exp() * a.abs(), torch.zeros_like(lr))  # (b, R): r |A|
    n_valid = mask.sum().clamp(min=1)
    return {"amp/frac": amp.sum() / n_valid,
            "amp/weight_share": (w * amp).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)}


def amplified_examples(tokenizer, input_ids, response_start: int, mask, zeroed, log_ratio, adv,
                       limit: int = 16, context_chars: int = 48) -> list[dict]:
    """Up to ``limit`` tokens that kept their gradient, largest r first, decoded in context.

    The same token in the same context with the same advantage (identical responses of a
    group) is listed once. Each: {"text": the preceding context (last ``context_chars`` characters), "token",
    "log_ratio", "adv"} -- the shape of ``tokens/zeroed`` plus the advantage.
    """
    kept = _kept(mask, zeroed, adv)
    score = torch.where(kept, log_ratio.detach().float(), torch.full_like(log_ratio.float(), -torch.inf)).cpu()
    k = min(limit, int(kept.sum()))
    if k == 0:
        return []
    order = torch.argsort(score.flatten(), descending=True, stable=True)[: int(kept.sum())]
    R = score.shape[1]
    out, seen = [], set()
    for flat in order.tolist():  # a group often holds the same response several times: list each once
        b, t = divmod(flat, R)
        ids = input_ids[b].long().tolist()
        pos = response_start + t
        key = (tuple(ids[: pos + 1]), float(adv[b]))
        if key in seen:
            continue
        seen.add(key)
        context = tokenizer.decode(ids[:pos], skip_special_tokens=True)[-context_chars:]
        out.append({"text": context, "token": tokenizer.decode([ids[pos]]), "log_ratio": float(log_ratio[b, t]),
                    "adv": float(adv[b])})
        if len(out) == k:
            break
    return out
