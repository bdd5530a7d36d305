"""Input checks shared by the losses, the masking solvers and the queue.

Every check raises ``ValueError`` naming the argument and the accepted values.
The finiteness check reads one boolean from the device per call (one host sync),
never one per token.
"""

from __future__ import annotations

import math

import torch

REGIONS = ("harmful", "all")


def check_choice(name: str, value: str, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not accepted; accepted values: {sorted(accepted)}")


def check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_nonnegative_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def check_policy_inputs(logp, old_logp, adv, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the four tensors every policy loss takes.

    Returns ``(adv_bt, mask_bool)``: ``adv`` broadcast to (B, T) and ``mask`` as bool.
    Non-finite values are only an error at valid (mask == True) positions; padding may
    hold anything (e.g. -inf log-probs) and is never read.
    """
    for name, t in (("logp", logp), ("old_logp", old_logp), ("mask", mask), ("adv", adv)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if logp.dim() != 2:
        raise ValueError(f"logp must have shape (B, T), got {tuple(logp.shape)}")
    if old_logp.shape != logp.shape:
        raise ValueError(f"old_logp must have the shape of logp {tuple(logp.shape)}, got {tuple(old_logp.shape)}")
    if mask.shape != logp.shape:
        raise ValueError(f"mask must have the shape of logp {tuple(logp.shape)}, got {tuple(mask.shape)}")
    B, T = logp.shape
    if adv.shape == (B,):
        adv = adv[:, None].expand(B, T)
    elif adv.shape != (B, T):
        raise ValueError(f"adv must have shape (B,)=({B},) or (B, T)=({B}, {T}), got {tuple(adv.shape)}")
    if not (logp.is_floating_point() and old_logp.is_floating_point() and adv.is_floating_point()):
        raise ValueError("logp, old_logp and adv must be floating-point tensors")
    mask = mask.bool()
    finite = (
        torch.isfinite(logp.detach()) & torch.isfinite(old_logp.detach()) & torch.isfinite(adv.detach())
    ) | ~mask
    if not bool(finite.all()):  # one host sync per call
        bad = [
            n
            for n, t in (("logp", logp), ("old_logp", old_logp), ("adv", adv))
            if not bool((torch.isfinite(t.detach()) | ~mask).all())
        ]
        raise ValueError(f"{', '.join(bad)} must be finite (no NaN or inf) at valid (mask=True) positions")
    return adv, mask
