"""Input checks and the working dtype shared by the losses, the masking solvers and the queue.

Every check raises ``ValueError`` naming the argument and the accepted values.
:func:`check_policy_inputs` reads one boolean from the device per call (one host sync:
finite values and a 0/1 mask together), never one per token. :func:`as_bool_mask` reads
nothing for a bool mask and one boolean for an integer or float one.
"""

from __future__ import annotations

import math

import torch

REGIONS = ("harmful", "all")
RULES = ("algorithm1", "areal")


def check_choice(name: str, value: str, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not accepted; accepted values: {sorted(accepted)}")


def check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_nonnegative_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def widen(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 or wider (bf16/fp16 -> float32; float64 stays): the working dtype.

    Differentiable: a gradient flows back to the low-precision input.
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _wrapped(t: torch.Tensor) -> bool:
    """True for a tensor inside a ``torch.func`` transform (nothing can be read from it)."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def _mask_values_ok(mask: torch.Tensor) -> torch.Tensor:
    """0-d bool: every entry of a non-bool mask is exactly 0 or 1 (NaN is neither)."""
    return ((mask == 0) | (mask == 1)).all()


def as_bool_mask(mask, name: str = "mask") -> torch.Tensor:
    """``mask`` as bool: a bool tensor as it is, an integer or float one only if every entry is 0 or 1.

    A float mask is never cast with ``bool()`` (that would count 0.5 or NaN as valid).
    Reads one boolean from the device for a non-bool mask; under ``torch.func`` transforms
    (where nothing can be read) the mask must already be bool.
    """
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex() or _wrapped(mask):
        raise ValueError(f"{name} must be bool, or 0/1 integers or floats outside torch.func transforms")
    if not bool(_mask_values_ok(mask)):  # one host sync
        raise ValueError(f"{name} must hold only 0 and 1 (or be bool), got other values (e.g. 0.5 or NaN)")
    return mask.bool()


def check_policy_inputs(logp, old_logp, adv, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the four tensors every policy loss takes.

    Returns ``(adv_bt, mask_bool)``: ``adv`` broadcast to (B, T) and ``mask`` as bool.
    ``mask`` may be bool or 0/1 integers/floats (anything else is an error). Non-finite
    values are only an error at valid (mask == True) positions; padding may hold anything
    (e.g. -inf log-probs) and is never read.
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
    if mask.dtype != torch.bool and (mask.is_complex() or _wrapped(mask)):
        as_bool_mask(mask)  # raises the message for these cases
    is_bool = mask.dtype == torch.bool
    mask_ok = torch.ones((), dtype=torch.bool, device=mask.device) if is_bool else _mask_values_ok(mask)
    valid = mask.bool()  # (B, T); a mask that is not 0/1 fails the check below
    finite = ~valid | (torch.isfinite(logp.detach()) & torch.isfinite(old_logp.detach()) & torch.isfinite(adv.detach()))
    if not bool(finite.all() & mask_ok):  # one host sync per call
        as_bool_mask(mask)  # raises if the mask is at fault
        bad = [
            n
            for n, t in (("logp", logp), ("old_logp", old_logp), ("adv", adv))
            if not bool((torch.isfinite(t.detach()) | ~valid).all())
        ]
        raise ValueError(f"{', '.join(bad)} must be finite (no NaN or inf) at valid (mask=True) positions")
    return adv, valid


def check_count(name: str, value, local: torch.Tensor):
    """A caller's normaliser (``num_tokens``, ``num_seqs``): None -> ``local``; else checked, returned.

    Accepted: a number or 0-d tensor > 0, or exactly 0 when this batch has nothing to count
    (``local == 0``: the loss of an empty batch is 0). Rejected with a ValueError naming
    ``name``: negative, NaN/inf, or 0 while the batch has something to count. A Python
    number > 0 costs nothing; 0 or a tensor count costs one host read (none under
    ``torch.func`` transforms, where the value cannot be read and is used as given).
    """
    if value is None:
        return local
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise ValueError(f"{name} must be a number or a 0-d tensor > 0, got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise ValueError(f"{name} must be a 0-d tensor, got shape {tuple(value.shape)}")
        if _wrapped(value) or _wrapped(local):
            return value
        v, here = torch.stack([value.double(), local.double().to(value.device)]).tolist()  # one host read
    else:
        v, here = float(value), None
    if not math.isfinite(v) or v < 0 or (v == 0 and (here if here is not None else float(local)) > 0):
        raise ValueError(
            f"{name} must be > 0 (0 only for a batch with nothing to count; None: this batch's own count), got {v!r}"
        )
    return value
