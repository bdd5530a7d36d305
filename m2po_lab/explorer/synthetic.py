"""Synthetic batches of token log-ratios and advantages, for the explorer and the tests.

A stale batch (arXiv 2510.01161, Sec. 3) has ``log_ratio = logp - old_logp`` close to 0
for most tokens and a few large outliers; the second moment ``M2 = mean (log r)^2`` is
what M2PO bounds. Two shapes of log-ratio are offered here:

- ``"gaussian"``: ``log_ratio = scale * z``, z ~ N(0, 1) (light tails: M2 ~ scale^2).
- ``"student_t"``: ``log_ratio = scale * t_dof`` (heavy tails: a few tokens carry most of
  M2, the regime in which masking a handful of tokens brings M2 under tau).

Advantages are independent of the log-ratio: sign +1 with probability ``pos_frac``,
magnitude ``|N(0, 1)|`` (bounded away from 0, so every token has an advantage sign).
Every draw uses its own ``torch.Generator`` seeded by ``seed``: no global RNG state.
"""

from __future__ import annotations

import torch

from .._checks import check_choice, check_positive

KINDS = ("gaussian", "student_t")
MIN_ABS_ADV = 1e-3
"""Smallest |A| drawn, so that the effective weight d loss / d logp / (-A) is always defined."""


def _check_args(n, kind, scale, dof, pos_frac, seed) -> None:
    check_choice("kind", kind, KINDS)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    check_positive("scale", scale)
    if kind == "student_t" and (not isinstance(dof, int) or isinstance(dof, bool) or dof < 1):
        raise ValueError(f"dof must be an integer >= 1 for kind='student_t', got {dof!r}")
    if not isinstance(pos_frac, (int, float)) or isinstance(pos_frac, bool) or not 0 <= pos_frac <= 1:
        raise ValueError(f"pos_frac must be a number in [0, 1], got {pos_frac!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def student_t(n: int, dof: int, gen: torch.Generator) -> torch.Tensor:
    """n draws of Student's t with integer ``dof``: ``z / sqrt(chi2_dof / dof)``. (n,) float32.

    ``chi2_dof`` is a sum of ``dof`` squared standard normals, so only ``gen`` is used.
    """
    z = torch.randn(n, generator=gen)  # (n,)
    chi2 = torch.randn(n, dof, generator=gen).square().sum(-1)  # (n,)
    return z / (chi2 / dof).sqrt()


def synthetic_log_ratios(
    n: int,
    kind: str = "student_t",
    scale: float = 0.1,
    dof: int = 3,
    pos_frac: float = 0.5,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sequence of ``n`` synthetic tokens: ``(log_ratio, adv, mask)``, each (1, n).

    Args:
        n: number of tokens, >= 1.
        kind: ``"gaussian"`` (``scale * N(0, 1)``) or ``"student_t"`` (``scale * t_dof``).
        scale: the spread of log r (sigma for the Gaussian), > 0.
        dof: Student-t degrees of freedom, an integer >= 1 (1 = Cauchy); ignored for Gaussian.
        pos_frac: probability that a token's advantage is positive, in [0, 1].
        seed: seeds a private ``torch.Generator``; same seed, same batch.

    Returns:
        ``log_ratio`` (1, n) float32, ``adv`` (1, n) float32 with ``|adv| >= 1e-3``,
        ``mask`` (1, n) bool, all True.
    """
    _check_args(n, kind, scale, dof, pos_frac, seed)
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=gen) if kind == "gaussian" else student_t(n, dof, gen)  # (n,)
    log_ratio = (scale * base)[None, :]  # (1, n)
    sign = torch.where(torch.rand(n, generator=gen) < pos_frac, 1.0, -1.0)  # (n,)
    magnitude = torch.randn(n, generator=gen).abs().clamp(min=MIN_ABS_ADV)  # (n,)
    adv = (sign * magnitude)[None, :]  # (1, n)
    mask = torch.ones(1, n, dtype=torch.bool)  # (1, n)
    return log_ratio, adv, mask
