"""What each registered loss does to each token: the numbers behind the explorer's page 1.

Everything here calls the *registered* losses (:func:`m2po_lab.losses.get_loss`) and
differentiates them with autograd, so the app, the notebooks and the tests see exactly
the code a trainer runs.

The **effective weight** of token i under a loss is

    w_i = (d per_token_loss_i / d logp_i) / (-A_i)

For the plain importance-weighted gradient (``no_tr``, ``l = -A r``) it is ``w = r``;
a clipped or masked token has ``w = 0`` (its gradient is zeroed); TIS and CISPO
change ``w`` without zeroing it. The paper's point (arXiv 2510.01161, Sec. 4) is
visible in these weights: GRPO's clip zeroes every harmful-quadrant token with
``|r - 1| > eps``, M2PO (Algorithm 1) zeroes only the few largest ``(log r)^2``
needed to bring the candidates' mean M2 under tau.
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np
import torch

from .. import masking
from .._checks import check_choice
from ..aggregation import aggregate
from ..losses import LossConfig, get_loss
from ..metrics import M2, importance_metrics

METHODS = ("no_tr", "grpo", "m2po", "m2po_released", "tis", "mis", "cispo")
"""The token-level losses compared token by token (GSPO is left out: its ratio is per sequence)."""

METHOD_LABELS = {
    "no_tr": "no trust region (r A)",
    "grpo": "GRPO clip",
    "m2po": "M2PO (Algorithm 1)",
    "m2po_released": "M2PO released rule",
    "tis": "truncated IS (TIS)",
    "mis": "masked IS (MIS)",
    "cispo": "CISPO",
}

FATES = (
    "kept",
    "clipped (GRPO)",
    "masked (M2PO)",
    "clipped (released rule)",
    "dropped (MIS)",
    "reweighted (TIS)",
    "reweighted (CISPO)",
)
"""Every label :func:`fate_labels` can give a token."""

_ZEROED_FATE = {
    "no_tr": "zeroed",
    "grpo": "clipped (GRPO)",
    "m2po": "masked (M2PO)",
    "m2po_released": "clipped (released rule)",
    "tis": "zeroed",
    "mis": "dropped (MIS)",
    "cispo": "zeroed",
}
_REWEIGHTED_FATE = {"tis": "reweighted (TIS)", "cispo": "reweighted (CISPO)"}

QUADRANTS = ("A>0, r>1 (harmful)", "A<0, r<1 (harmful)", "A>0, r<=1", "A<0, r>=1")
"""Histogram series: the two trust-region ('harmful') quadrants, then the other two."""


# ---------------------------------------------------------------- per-token gradients
def effective_weights(name: str, log_ratio, adv, mask, cfg: LossConfig | None = None):
    """Run the registered loss ``name`` and differentiate it token by token.

    ``logp = log_ratio`` (a leaf that requires grad) and ``old_logp = 0``, so
    ``logp - old_logp`` is exactly ``log_ratio``; every loss depends on the pair only
    through that difference.

    Args:
        log_ratio: (B, T) ``logp - old_logp``. adv: (B,) or (B, T). mask: (B, T) valid tokens.
    Returns:
        ``weight`` (B, T): ``grad / (-A)``, NaN at padding and where ``A == 0``;
        ``grad`` (B, T): ``d per_token_loss / d logp``;
        ``metrics``: the loss's metrics as Python floats (one host read each).
    """
    logp = log_ratio.detach().clone().requires_grad_(True)  # (B, T)
    old_logp = torch.zeros_like(logp)  # (B, T)
    per_token_loss, metrics = get_loss(name)(logp, old_logp, adv, mask, cfg)
    (grad,) = torch.autograd.grad(per_token_loss.sum(), logp)  # (B, T)
    adv_bt = adv[:, None].expand_as(logp) if adv.dim() == 1 else adv  # (B, T)
    defined = mask.bool() & (adv_bt != 0)
    weight = torch.where(defined, grad / torch.where(defined, -adv_bt, torch.ones_like(adv_bt)), torch.nan)
    return weight, grad, {k: float(v) for k, v in metrics.items()}


def token_fates(log_ratio, adv, mask, cfg: LossConfig | None = None, methods=METHODS) -> dict[str, dict]:
    """For each method: the effective weight and the zeroed flag of every valid token.

    Returns ``{method: {"weight": (N,), "zeroed": (N,) bool, "metrics": {key: float}}}``,
    N = number of valid tokens, in ``log_ratio[mask]`` order. ``zeroed`` is read off the
    autograd gradient (exactly 0 at a valid token), not off the loss's own bookkeeping,
    so tests can check the two agree.
    """
    mask = mask.bool()
    out = {}
    for name in methods:
        weight, grad, metrics = effective_weights(name, log_ratio, adv, mask, cfg)
        out[name] = {"weight": weight[mask], "zeroed": (grad == 0)[mask], "metrics": metrics}
    return out


def fate_labels(name: str, weight: torch.Tensor, zeroed: torch.Tensor, log_ratio: torch.Tensor) -> list[str]:
    """One :data:`FATES` label per token for method ``name`` (all tensors (N,)).

    zeroed -> the method's own word (clipped / masked / dropped); a weight that differs
    from ``r = exp(log_ratio)`` by more than 1e-5 relative -> reweighted; otherwise kept.
    """
    ratio = log_ratio.exp()  # (N,)
    reweighted = (weight - ratio).abs() > 1e-5 * ratio
    zero_word = _ZEROED_FATE[name]
    re_word = _REWEIGHTED_FATE.get(name, "kept")
    return [zero_word if z else (re_word if rw else "kept") for z, rw in zip(zeroed.tolist(), reweighted.tolist())]


# ---------------------------------------------------------------- summaries
def m2_kept(log_ratio, zeroed, candidates) -> float:
    """Mean ``(log r)^2`` over the candidate tokens that still get a gradient (0 if none); (N,) inputs."""
    keep = candidates & ~zeroed
    return float(log_ratio[keep].square().mean()) if bool(keep.any()) else 0.0


def method_table(fates: dict[str, dict], log_ratio, candidates) -> list[dict]:
    """One row per method: fraction zeroed, fraction reweighted, M2 of what is left, max weight.

    ``log_ratio`` and ``candidates`` are (N,) over valid tokens (as in :func:`token_fates`).
    """
    rows = []
    for name, fate in fates.items():
        m = fate["metrics"]
        rows.append(
            {
                "method": name,
                "clip/frac": m["clip/frac"],
                "is/weight_clip_frac": m.get("is/weight_clip_frac", 0.0),
                "M2 kept candidates": m2_kept(log_ratio, fate["zeroed"], candidates),
                "max weight": float(torch.nan_to_num(fate["weight"], nan=0.0).max()) if fate["weight"].numel() else 0.0,
            }
        )
    return rows


THREE_RULES = {
    "m2po": "the paper, Algorithm 1",
    "m2po_released": "the authors' released verl fork (water-filling, then clip)",
    "m2po_areal": "AReaL, merged in PR #480 (every token a candidate, PPO clip)",
}
"""The published M2PO rules, with where each ships (docs/choosing_a_method.md)."""


def three_rules(log_ratio, adv, mask, tau: float = 0.04, prox_logp=None) -> list[dict]:
    """The three published M2PO rules on one batch: what each zeroes, what M2 is left, how big the update is.

    One row per rule of :data:`THREE_RULES`: tokens whose gradient is zeroed (count and
    fraction of valid tokens, read off autograd), M2 of the candidates that keep a gradient
    (``m2po/m2_after``; each rule's own candidates), and the norm of the gradient of the
    token-mean loss with respect to ``logp`` (how large an update the batch asks for).
    ``prox_logp`` (B, T): AReaL's proximal policy, relative to ``old_logp = 0`` (default:
    none, the behaviour policy). Inputs as in :func:`effective_weights`.
    """
    mask = mask.bool()
    n_valid = int(mask.sum())
    rows = []
    for name, source in THREE_RULES.items():
        logp = log_ratio.detach().clone().requires_grad_(True)  # (B, T), old_logp = 0
        extra = {"prox_logp": prox_logp} if name == "m2po_areal" and prox_logp is not None else {}
        per_token, metrics = get_loss(name)(logp, torch.zeros_like(logp), adv, mask, LossConfig(tau=tau), **extra)
        loss = aggregate(per_token, mask, "token-mean")
        (grad,) = torch.autograd.grad(loss, logp, retain_graph=True)  # (B, T)
        (per_tok_grad,) = torch.autograd.grad(per_token.sum(), logp)
        adv_bt = adv[:, None].expand_as(logp) if adv.dim() == 1 else adv  # (B, T)
        zeroed = int((mask & (adv_bt != 0) & (per_tok_grad == 0)).sum())
        rows.append({"rule": name, "ships in": source, "tokens zeroed": zeroed,
                     "zeroed frac": zeroed / max(n_valid, 1), "M2 after": float(metrics["m2po/m2_after"]),
                     "grad norm": float(grad.norm())})
    return rows


def histogram_edges(limit: float, bins: int = 60, spacing: str = "linear", width: float = 0.1) -> np.ndarray:
    """``bins + 1`` edges on ``[-limit, limit]``, symmetric about 0 with 0 an edge (``bins`` even).

    ``spacing="asinh"``: uniform in ``asinh(x / width)``: fine bins near 0 where most
    tokens are, coarse ones in the heavy tails (matches a symmetric-log axis).
    """
    check_choice("spacing", spacing, ("linear", "asinh"))
    bins = bins + bins % 2
    limit = limit * (1 + 1e-9) if limit > 0 else 1.0
    if spacing == "linear":
        return np.linspace(-limit, limit, bins + 1)
    u = np.linspace(-np.arcsinh(limit / width), np.arcsinh(limit / width), bins + 1)
    edges = width * np.sinh(u)
    edges[bins // 2] = 0.0
    return edges


def histogram_data(log_ratio, adv, mask, bins: int = 60, spacing: str = "linear") -> dict:
    """Counts of valid-token log r per quadrant, on :func:`histogram_edges` over ``max |log r|``.

    Returns ``{"edges": (bins + 1,) array, "counts": {quadrant: (bins,) int array}}`` with
    :data:`QUADRANTS` as keys; every valid token is counted once. ``bins`` is rounded up to
    an even number, so 0 is an edge and each bin lies on one side of r = 1.
    """
    mask = mask.bool()
    adv_bt = adv[:, None].expand_as(log_ratio) if adv.dim() == 1 else adv
    lr = log_ratio[mask].detach().double().numpy()  # (N,)
    a = adv_bt[mask].detach().double().numpy()  # (N,)
    edges = histogram_edges(float(np.abs(lr).max()) if lr.size else 1.0, bins, spacing)
    groups = {
        QUADRANTS[0]: (a > 0) & (lr > 0),
        QUADRANTS[1]: (a < 0) & (lr < 0),
        QUADRANTS[2]: (a > 0) & (lr <= 0),
        QUADRANTS[3]: (a < 0) & (lr >= 0),
    }
    return {"edges": edges, "counts": {k: np.histogram(lr[g], edges)[0] for k, g in groups.items()}}


def shift_comparison(d: float) -> dict[str, dict[str, float]]:
    """k1, k3 and M2 of three two-token batches: both +d, both -d, and one +d one -d.

    The k1 estimate ``mean(-log r)`` cancels the symmetric batch to exactly 0 (and is
    negative for +d); k3 ``mean(r - 1 - log r)`` never cancels but is lopsided (a token
    whose probability fell by log r = -d counts less than one that rose by +d);
    ``M2 = mean (log r)^2`` is d^2 in all three (arXiv 2510.01161, Sec. 4.1).
    """
    batches = {"both +d": (d, d), "both -d": (-d, -d), "+d and -d": (d, -d)}
    out = {}
    for label, values in batches.items():
        lr = torch.tensor([values], dtype=torch.float64)  # (1, 2)
        m = importance_metrics(lr, torch.ones_like(lr, dtype=torch.bool))
        out[label] = {"kl/k1": float(m["kl/k1"]), "kl/k3": float(m["kl/k3"]), M2: float(lr.square().mean())}
    return out


# ---------------------------------------------------------------- source code
_RELATED: dict[str, tuple[Callable, ...]] = {
    "m2po": (masking.m2po_mask,),
    "m2po_released": (masking.waterfill_threshold_tensor,),
}


def loss_sources(name: str) -> dict[str, str]:
    """``{title: source}``: the registered loss ``name``, then the solver it calls (if any)."""
    fn = get_loss(name)
    out = {f"{fn.__module__}.{fn.__name__}": inspect.getsource(fn)}
    for helper in _RELATED.get(name, ()):
        out[f"{helper.__module__}.{helper.__name__}"] = inspect.getsource(helper)
    return out


# ---------------------------------------------------------------- one call for the app
def explain_batch(
    log_ratio, adv, mask, cfg: LossConfig | None = None, methods=METHODS, bins: int = 60, spacing: str = "linear"
) -> dict:
    """Everything page 1 shows for one batch, as NumPy arrays and floats (cheap to cache).

    Keys: ``log_ratio``, ``adv``, ``candidates`` (N,) over valid tokens; ``position`` (N, 2):
    each token's (sequence, position) in the batch; ``weight``,
    ``zeroed``, ``fate`` (``{method: (N,)}``); ``metrics`` (``{method: {key: float}}``);
    ``table`` (rows of :func:`method_table`); ``hist`` (:func:`histogram_data` with ``bins``, ``spacing``).
    """
    cfg = LossConfig() if cfg is None else cfg
    mask = mask.bool()
    adv_bt = adv[:, None].expand_as(log_ratio) if adv.dim() == 1 else adv
    fates = token_fates(log_ratio, adv_bt, mask, cfg, methods)
    lr = log_ratio[mask].detach()  # (N,)
    cand = masking.trust_region_candidates(log_ratio, adv_bt, mask, cfg.region)[mask]  # (N,)
    return {
        "log_ratio": lr.double().numpy(),
        "adv": adv_bt[mask].detach().double().numpy(),
        "candidates": cand.numpy(),
        "position": mask.nonzero().numpy(),  # row-major, the order of log_ratio[mask]
        "weight": {k: f["weight"].double().numpy() for k, f in fates.items()},
        "zeroed": {k: f["zeroed"].numpy() for k, f in fates.items()},
        "fate": {k: np.array(fate_labels(k, f["weight"], f["zeroed"], lr)) for k, f in fates.items()},
        "metrics": {k: f["metrics"] for k, f in fates.items()},
        "table": method_table(fates, lr, cand),
        "hist": histogram_data(log_ratio, adv_bt, mask, bins, spacing),
    }
