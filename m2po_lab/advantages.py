"""Group-relative advantages (GRPO, Dr.GRPO)."""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, normalize_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Outcome advantages from groups of responses to the same prompt.

    ``A_i = (R_i - mean_g R) / (std_g R + eps)`` (GRPO, arXiv 2402.03300 Sec. 4.1.2);
    ``normalize_std=False`` gives Dr.GRPO's ``A_i = R_i - mean_g R`` (arXiv 2503.20783).
    ``std`` is the unbiased sample standard deviation, as in TRL and verl. A group whose
    rewards are all equal gets exactly 0 (never NaN, never rounding noise).

    Args:
        rewards: (N,) with N = P * group_size, the G responses of a prompt contiguous;
            or (P, G).
        group_size: G >= 2.
    Returns:
        advantages with the shape of ``rewards``.
    """
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 2:
        raise ValueError(f"group_size must be an integer >= 2, got {group_size!r}")
    if not isinstance(rewards, torch.Tensor) or not rewards.is_floating_point():
        raise ValueError("rewards must be a floating-point torch.Tensor")
    if rewards.dim() == 2 and rewards.shape[1] != group_size:
        raise ValueError(f"rewards of shape (P, G) must have G == group_size={group_size}, got {tuple(rewards.shape)}")
    if rewards.dim() not in (1, 2) or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must have shape (P * group_size,) or (P, group_size); got {tuple(rewards.shape)} "
            f"with group_size={group_size}"
        )
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards must be finite (no NaN or inf)")
    grouped = rewards.reshape(-1, group_size)  # (P, G)
    centred = grouped - grouped.mean(-1, keepdim=True)  # (P, G)
    flat = (grouped.amax(-1, keepdim=True) == grouped.amin(-1, keepdim=True))  # (P, 1) zero variance
    if normalize_std:
        centred = centred / (grouped.std(-1, keepdim=True) + eps)
    adv = torch.where(flat, torch.zeros_like(centred), centred)
    return adv.reshape(rewards.shape)
