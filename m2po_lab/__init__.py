"""m2po-lab: M2PO (arXiv 2510.01161) next to GRPO and its clipping variants, for stale-rollout RL."""

from .advantages import group_advantages
from .aggregation import AGG_MODES, aggregate
from .losses import LOSSES, LossConfig, batch_state, get_loss, register_loss, slice_state
from .masking import m2po_keep_mask, m2po_mask, trust_region_candidates, waterfill_threshold
from .staleness import StaleBatch, StaleQueue

__version__ = "0.2.0"

__all__ = [
    "AGG_MODES",
    "LOSSES",
    "LossConfig",
    "StaleBatch",
    "StaleQueue",
    "aggregate",
    "batch_state",
    "get_loss",
    "group_advantages",
    "m2po_keep_mask",
    "m2po_mask",
    "register_loss",
    "slice_state",
    "trust_region_candidates",
    "waterfill_threshold",
]
