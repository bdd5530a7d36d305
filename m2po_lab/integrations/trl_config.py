"""The TRL adapter's settings and the checks of a ``GRPOConfig``, importable without TRL.

:class:`PolicyLossArgs` says which m2po-lab loss :class:`m2po_lab.integrations.trl.M2POGRPOTrainer`
minimises and over what batch it decides M2PO's mask; :func:`check_args` refuses a
``GRPOConfig`` under which the ratio would be identically 1 or that the adapter cannot honour.
Why, and what TRL's staleness is: :mod:`m2po_lab.integrations.trl`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from m2po_lab._checks import check_choice
from m2po_lab.aggregation import AGG_MODES
from m2po_lab.losses import LossConfig, get_loss

if TYPE_CHECKING:  # only for the annotations
    from trl import GRPOConfig

MASK_SCOPES = ("optimizer_batch", "micro_batch")

@dataclass(frozen=True)
class PolicyLossArgs:
    """Which m2po-lab loss ``M2POGRPOTrainer`` minimises, and over what batch it decides M2PO's mask."""

    loss: str = "m2po"
    """A registered loss: m2po, m2po_released, grpo, no_tr, gspo, tis, mis, cispo."""
    loss_config: LossConfig = field(default_factory=LossConfig)
    """Its hyperparameters: tau (0.04, the paper), region ('harmful', the paper), eps, ..."""
    agg_mode: str = "token-mean"
    """Reduction (verl's names); token-mean is M2PO's 1 / sum_i |o_i| (masked tokens stay counted)."""
    mask_scope: str = "optimizer_batch"
    """'optimizer_batch' (paper, Algorithm 1 over the mini-batch) or 'micro_batch' (released code)."""

    def __post_init__(self):
        get_loss(self.loss)
        if not isinstance(self.loss_config, LossConfig):
            raise ValueError(f"loss_config must be a LossConfig, got {type(self.loss_config).__name__}")
        check_choice("agg_mode", self.agg_mode, AGG_MODES)
        check_choice("mask_scope", self.mask_scope, MASK_SCOPES)


def generations_reused(args: GRPOConfig) -> bool:
    """True when TRL trains some micro-batches after an update, i.e. computes ``old_per_token_logps``.

    TRL 1.16 computes them iff ``gradient_accumulation_steps % (steps_per_generation *
    num_iterations) != 0`` (the vLLM importance-sampling path computes them regardless, but
    then they equal the current log-probs and the ratio is still 1).
    """
    generate_every = args.steps_per_generation * args.num_iterations
    return args.gradient_accumulation_steps % generate_every != 0


def check_args(args: GRPOConfig | None) -> None:
    """``ValueError`` for a GRPOConfig under which the M2PO ratio would be identically 1, or that we cannot honour."""
    if args is None:
        raise ValueError(
            "M2POGRPOTrainer needs an explicit GRPOConfig with reused generations: TRL's default "
            "(steps_per_generation = gradient_accumulation_steps, num_iterations = 1) is on-policy"
        )
    if not generations_reused(args):
        raise ValueError(
            "M2POGRPOTrainer: generations are on-policy with gradient_accumulation_steps="
            f"{args.gradient_accumulation_steps}, steps_per_generation={args.steps_per_generation}, "
            f"num_iterations={args.num_iterations}: every generation is trained within one optimizer "
            "step, so TRL computes no old_per_token_logps and the ratio pi_theta / pi_old is identically 1 "
            "(M2PO would mask nothing). Reuse generations across optimizer steps, e.g. "
            "steps_per_generation = 4 * gradient_accumulation_steps (4 updates per generation, as in "
            "arXiv 2510.01161) or num_iterations > 1: steps_per_generation * num_iterations must not "
            "divide gradient_accumulation_steps."
        )
    unsupported = {
        "beta": (args.beta, 0.0),
        "importance_sampling_level": (args.importance_sampling_level, "token"),
        "top_entropy_quantile": (args.top_entropy_quantile, 1.0),
        "off_policy_mask_threshold": (args.off_policy_mask_threshold, None),
    }
    unsupported["entropy_coef"] = (getattr(args, "entropy_coef", 0.0), 0.0)
    unsupported["use_adaptive_entropy"] = (getattr(args, "use_adaptive_entropy", False), False)
    bad = [f"{k}={v!r} (need {want!r})" for k, (v, want) in unsupported.items() if v != want]
    if bad:
        raise ValueError(
            "M2POGRPOTrainer does not apply these GRPOConfig settings: " + ", ".join(bad)
            + ". Pick the loss with PolicyLossArgs(loss=...), e.g. loss='gspo' for sequence-level ratios."
        )
