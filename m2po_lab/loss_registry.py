"""The loss registry, its config and the pieces every loss shares (see :mod:`m2po_lab.losses`).

Numerics do not depend on the input dtype: ``_prepare`` forms ``log_ratio`` in float32
(float64 stays float64) from bf16/fp16/float32 ``logp`` and ``old_logp``, the registered
cores widen whatever they are given, so ``exp``, the per-token loss and the metrics are
float32 or wider; the gradient still flows back to the low-precision ``logp``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, overload

import torch

from ._checks import REGIONS, check_choice, check_policy_inputs, check_positive, widen
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
    """M2PO second-moment budget (arXiv 2510.01161, used for every model in the paper; AReaL's m2_threshold)."""
    region: str = "harmful"
    """M2PO candidates: 'harmful' = (A>0, r>1) or (A<0, r<1) (paper); 'all' = every valid token (not AReaL's rule)."""
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


class LossFn(Protocol):
    """The public loss: ``(per_token_loss, metrics)``, plus ``zeroed`` with ``with_zeroed=True``."""

    __name__: str

    @overload
    def __call__(self, logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                 cfg: Any = None, *, with_zeroed: Literal[False] = False,
                 **state: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    @overload
    def __call__(self, logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                 cfg: Any = None, *, with_zeroed: Literal[True],
                 **state: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]: ...


LOSSES: dict[str, LossFn] = {}
"""Name -> the public loss ``loss_fn(logp, old_logp, adv, mask, cfg=None, **state)``."""
_BATCH_STATE: dict[str, Callable] = {}
_PROXIMAL: set[str] = set()


@dataclass(frozen=True)
class PolicyLoss:
    """What the registry holds for one loss (``REGISTRY[name]``)."""

    name: str
    loss: LossFn
    """The public loss: ``loss(logp, old_logp, adv, mask, cfg=None, **state) -> (per_token_loss, metrics)``."""
    compute: Callable
    """The pure core ``compute(log_ratio, adv, mask, cfg, **state)``: no host syncs, ``torch.func.vmap``-able."""
    batch_state: Callable | None
    """Decides the mini-batch-level state (M2PO's mask, the water-filling threshold), or None."""
    proximal: bool
    """Takes ``prox_logp``, a proximal policy's log-probs (AReaL's decoupled objective)."""
    doc: str
    """The first paragraph of the loss's docstring: what it minimises and where it comes from."""


REGISTRY: dict[str, PolicyLoss] = {}
"""Name -> :class:`PolicyLoss`, in registration order (``m2po-lab losses`` prints it)."""

_PUBLIC_SIGNATURE = inspect.Signature([
    inspect.Parameter("logp", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("old_logp", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("adv", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("mask", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("cfg", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    inspect.Parameter("with_zeroed", inspect.Parameter.KEYWORD_ONLY, default=False),
    inspect.Parameter("state", inspect.Parameter.VAR_KEYWORD),
])


def register_loss(name: str, batch_state: Callable | None = None, proximal: bool = False):
    """Register a loss under ``name``, optionally with a mini-batch-scope state function.

    Decorates the pure core ``compute(log_ratio, adv, mask, cfg, **state)`` (log_ratio and
    adv (B, T), mask bool (B, T), padding already zeroed, cfg a LossConfig) and returns the
    public loss with the package signature, which validates its inputs and calls the core.
    The core stays reachable as ``LOSSES[name].compute`` (it widens bf16/fp16 inputs to
    float32 first): free of host syncs and Python branches on data, it can be
    ``torch.func.vmap``-ed over independent runs (the toy study trains 45 runs at once).
    ``proximal=True``: the public loss also takes ``prox_logp`` (B, T), log pi_prox of a
    proximal policy, and hands the core ``prox_log_ratio = prox_logp - old_logp``.

    The core returns ``(per_token_loss, metrics, zeroed)`` (build it with ``_finish``):
    ``zeroed`` (B, T) bool marks the valid tokens whose gradient the loss set to zero
    (clipped, masked, dropped; ``clip/frac`` is its mean). Both wrappers return the first
    two, and all three with ``with_zeroed=True``: a trainer learns which tokens were zeroed
    without differentiating a second time.
    """

    def deco(core: Callable) -> LossFn:
        @functools.wraps(core)
        def compute(log_ratio, adv, mask, cfg, *, with_zeroed=False, **state):
            out = core(widen(log_ratio), widen(adv), mask, cfg, **state)
            return out if with_zeroed else out[:2]

        @functools.wraps(core)
        def loss_fn(logp, old_logp, adv, mask, cfg=None, *, with_zeroed=False, **state):
            prox_logp = state.pop("prox_logp", None)
            cfg, log_ratio, adv, mask = _prepare(logp, old_logp, adv, mask, cfg)
            if prox_logp is not None:
                state["prox_log_ratio"] = prox_log_ratio(name, prox_logp, old_logp, mask)
            out = core(log_ratio, adv, mask, cfg, **state)
            return out if with_zeroed else out[:2]

        loss_fn.compute = compute
        loss_fn.__signature__ = _PUBLIC_SIGNATURE  # help() and IDEs show what callers pass, not the core's
        LOSSES[name] = loss_fn
        if batch_state is not None:
            _BATCH_STATE[name] = batch_state
        if proximal:
            _PROXIMAL.add(name)
        doc = inspect.cleandoc(core.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        REGISTRY[name] = PolicyLoss(name, loss_fn, compute, batch_state, proximal, doc)
        return loss_fn

    return deco


def get_loss(name: str) -> LossFn:
    """The registered loss ``name``; ``ValueError`` listing the names otherwise."""
    check_choice("loss", name, LOSSES)
    return LOSSES[name]


def batch_state(name: str, logp, old_logp, adv, mask, cfg=None, *, group=None, prox_logp=None) -> dict:
    """Decide a loss's batch-level quantities over a whole optimizer mini-batch.

    M2PO's M2 is a batch statistic (arXiv 2510.01161, Algorithm 1): to apply it to the
    mini-batch while the backward pass runs in micro-batches, compute this once on the
    mini-batch's (detached) log-probs, then pass ``slice_state(state, rows)`` as keyword
    arguments to the loss of each micro-batch. Losses without batch statistics return {}.

    ``group``: a ``torch.distributed`` process group over which the mini-batch is spread
    (this rank's rows: its micro-batches concatenated). The state is then decided over the
    rows of every rank, as one process would on their concatenation in rank order
    (:mod:`m2po_lab.distributed` names the communication). Every rank must call this
    exactly once per mini-batch, with the same ``name`` and ``cfg``; losses without batch
    statistics communicate nothing. ``prox_logp``: a proximal policy's log-probs for the
    losses that take one (``m2po_areal``).
    """
    get_loss(name)
    if prox_logp is not None and name not in _PROXIMAL:
        raise ValueError(f"prox_logp is only taken by {sorted(_PROXIMAL)}, not by loss={name!r}")
    fn = _BATCH_STATE.get(name)
    if fn is None:
        return {}
    extra = {} if prox_logp is None else {"prox_logp": prox_logp}
    return fn(logp, old_logp, adv, mask, cfg, group=group, **extra)


def slice_state(state: dict[str, torch.Tensor], rows) -> dict[str, torch.Tensor]:
    """The part of a :func:`batch_state` for the micro-batch ``rows`` (0-d values are shared)."""
    return {k: (v if v.dim() == 0 else v[rows]) for k, v in state.items()}


# ---------------------------------------------------------------- shared pieces
def _prepare(logp, old_logp, adv, mask, cfg):
    """Validate, zero the padding (so no NaN reaches a gradient), form log_ratio in float32 or wider."""
    cfg = LossConfig() if cfg is None else cfg
    if not isinstance(cfg, LossConfig):
        raise ValueError(f"cfg must be a LossConfig or None, got {type(cfg).__name__}")
    adv, mask = check_policy_inputs(logp, old_logp, adv, mask)
    logp = widen(logp)  # (B, T) float32+, the gradient flows back to the input dtype
    zero = torch.zeros_like(logp)
    logp = torch.where(mask, logp, zero)  # (B, T)
    old_logp = torch.where(mask, old_logp.detach().to(logp.dtype), zero)  # (B, T)
    adv = torch.where(mask, adv.detach().to(logp.dtype), zero)  # (B, T)
    return cfg, logp - old_logp, adv, mask


def prox_log_ratio(name: str, prox_logp, old_logp, mask) -> torch.Tensor:
    """``log pi_prox - log pi_behav`` (B, T), detached, float32 or wider, zero at padding."""
    if name not in _PROXIMAL:
        raise ValueError(f"prox_logp is only taken by {sorted(_PROXIMAL)}, not by loss={name!r}")
    if not isinstance(prox_logp, torch.Tensor) or prox_logp.shape != mask.shape or not prox_logp.is_floating_point():
        raise ValueError(f"prox_logp must be a float tensor of the shape of logp {tuple(mask.shape)}")
    prox = widen(prox_logp.detach())
    if not bool((torch.isfinite(prox) | ~mask).all()):  # one host sync
        raise ValueError("prox_logp must be finite (no NaN or inf) at valid (mask=True) positions")
    diff = prox - old_logp.detach().to(prox.dtype)  # (B, T)
    return torch.where(mask, diff, torch.zeros_like(diff))


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
    """A core's return value: (per-token loss zero at padding, metrics, zeroed valid tokens (B, T) bool)."""
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    zeroed = mask & zero_grad.bool()
    metrics = importance_metrics(log_ratio, mask)
    metrics["clip/frac"] = masked_mean(zeroed.float(), mask)
    metrics.update(extra or {})
    return per_token, metrics, zeroed


def _ppo_clip(ratio, adv, low, high):
    """max(-A r, -A clip(r, low, high)) and where the clipped (gradient-free) branch wins."""
    pg_loss1 = -adv * ratio  # (B, T)
    pg_loss2 = -adv * torch.clamp(ratio, low, high)  # (B, T)
    return torch.maximum(pg_loss1, pg_loss2), pg_loss2 > pg_loss1


def _dual_clip(per_token, adv, c):
    """Dual clip for A < 0: ``min(l, -A c)``; returns (loss, where the bound acts)."""
    pg_loss3 = -adv * c  # (B, T)
    dual = (adv < 0) & (pg_loss3 < per_token)
    return torch.where(dual, pg_loss3, per_token), dual
