"""Every policy loss the paper compares, one signature, one registry.

    loss_fn(logp, old_logp, adv, mask, cfg=None, *, with_zeroed=False, **batch_state)
        -> (per_token_loss, metrics), or (per_token_loss, metrics, zeroed) with with_zeroed=True

- ``logp`` (B, T): log pi_theta of the sampled tokens (carries the gradient).
- ``old_logp`` (B, T): log pi_behav, the (possibly stale) policy that sampled them.
- ``adv`` (B,) or (B, T): advantages (detached). ``mask`` (B, T): valid tokens (bool or 0/1).
- ``per_token_loss`` (B, T): the quantity to *minimise* (the negated surrogate),
  zero at padding; reduce it with :func:`m2po_lab.aggregation.aggregate`.
- ``metrics``: detached 0-d tensors under namespaced keys; the logger syncs them once.
- ``zeroed`` (B, T) bool: the valid tokens whose gradient the loss set to zero (clipped,
  masked or dropped); ``clip/frac`` is its mean over the valid tokens.

``log_ratio = logp - old_logp`` and ``ratio = exp(log_ratio)``. With ``logp == old_logp``
every loss here has the gradient of the on-policy policy gradient ``-A * grad logp``.
Inputs may be bf16, fp16, float32 or float64: everything from ``log_ratio`` on is computed
in float32 or wider (``per_token_loss`` is float32 for low-precision inputs), and the
gradient flows back to ``logp`` in its own dtype.

``clip/frac`` is the fraction of valid tokens whose gradient the method zeroes (clipped
or masked). ``batch_state`` lets a trainer decide M2PO's mask over a whole optimizer
mini-batch -- on one process or across data-parallel ranks (``group=``) -- and then run
the backward pass in micro-batches (see :func:`batch_state`).

Where they live (all re-exported here, the one import users need): the registry,
:class:`LossConfig` and the shared pieces in :mod:`m2po_lab.loss_registry`; GRPO, no_tr,
GSPO, TIS, MIS and CISPO in :mod:`m2po_lab.clipping_losses`; the M2PO family (``m2po``,
``m2po_released``, ``m2po_areal``) in :mod:`m2po_lab.m2po_losses`. Registration order (and
so ``LOSSES``) is the import order below.
"""

from __future__ import annotations

from .clipping_losses import (
    cispo_loss,
    grpo_loss,
    gspo_loss,
    mis_loss,
    no_trust_region_loss,
    tis_loss,
)
from .loss_registry import (
    LOSSES,
    REGISTRY,
    LossConfig,
    PolicyLoss,
    batch_state,
    get_loss,
    register_loss,
    slice_state,
)
from .m2po_losses import m2po_areal_loss, m2po_loss, m2po_released_loss

__all__ = [
    "LOSSES",
    "REGISTRY",
    "PolicyLoss",
    "LossConfig",
    "batch_state",
    "cispo_loss",
    "get_loss",
    "grpo_loss",
    "gspo_loss",
    "m2po_areal_loss",
    "m2po_loss",
    "m2po_released_loss",
    "mis_loss",
    "no_trust_region_loss",
    "register_loss",
    "slice_state",
    "tis_loss",
]
