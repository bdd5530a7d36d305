"""M2PO as a verl policy loss: ``loss_mode=m2po`` (paper) and ``loss_mode=m2po_released`` (released code).

Importing this module registers both names with ``verl.trainer.ppo.core_algos.register_policy_loss``.
verl imports it on every process, Ray workers included, through the ``verl.plugins``
entry point (``m2po = "m2po_lab.integrations.verl:register"``): ``import verl`` loads each
entry point of that group (unless ``VERL_USE_EXTERNAL_PLUGINS=none``) and logs a failure
only at debug level, so check ``get_policy_loss_fn("m2po")`` once on a worker.

Each loss has verl's signature ``(old_log_prob, log_prob, advantages, response_mask,
loss_agg_mode, config, rollout_is_weights) -> (loss, metrics)``, computes the per-token
loss with m2po-lab's core (:func:`m2po_lab.losses.get_loss`), multiplies it by
``rollout_is_weights`` like verl's own losses, and reduces it with verl's ``agg_loss(...,
**config.global_batch_info)``, so data-parallel and micro-batch splits normalise as verl's do.
Hyperparameters come from :class:`M2POPolicyLossConfig`, selected by ``_target_``.

Which log-prob is ``old_log_prob`` (verl 0.9.1, ``algorithm.rollout_correction``):

- decoupled mode (``bypass_mode=false``, the default): the actor *recomputes* it before the
  update, with the parameters of the start of the step (fully-async: of the first version
  of the sync window). That is a proximal policy, not the behaviour policy: plain ``m2po``
  then bounds M2 against that anchor (as AReaL does) and the staleness is left to
  ``rollout_is_weights = pi_old / pi_rollout`` (TIS or IcePop, multiplied in).
- bypass mode (``bypass_mode=true``): ``old_log_prob = rollout_log_probs``, the behaviour
  policy M2PO needs -- but ``apply_bypass_mode`` also sets ``loss_mode=bypass_mode``, which
  replaces this loss. Do not use bypass mode with M2PO.
- the paper's M2PO (M2 of ``log pi_theta - log pi_behav``): decoupled mode with
  ``rollout_is=token`` and a threshold that never truncates (e.g. ``1e9``), plus
  ``policy_loss.behaviour=rollout``: this loss rebuilds ``log pi_rollout = old_log_prob -
  log rollout_is_weights`` (exact up to verl's +-20 clamp of the log weight) and does not
  multiply the weights in a second time.

Scope: verl calls the loss once per micro-batch on each rank, so the mask is decided per
micro-batch (as in the released code). ``ppo_micro_batch_size_per_gpu`` equal to the
mini-batch per GPU makes it the rank's share of the optimizer mini-batch.

Tested with verl 0.9.1 on CPU (no GPU extras). Needs the extra: ``pip install 'm2po-lab[verl]'``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from m2po_lab._checks import check_choice
from m2po_lab.losses import LossConfig, get_loss

try:
    from omegaconf import DictConfig
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, register_policy_loss
    from verl.workers.config import PolicyLossConfig
except ImportError as err:
    raise ImportError(
        "m2po_lab.integrations.verl needs verl: pip install 'm2po-lab[verl]' (tested with verl 0.9.1; "
        "keep it in its own environment, verl's GPU extras pin an old trl)"
    ) from err

LOSS_MODES = ("m2po", "m2po_released")
BEHAVIOURS = ("old_log_prob", "rollout")


@dataclass
class M2POPolicyLossConfig(PolicyLossConfig):
    """verl's PolicyLossConfig plus M2PO's fields (``policy_loss._target_`` selects it)."""

    tau: float = 0.04
    """M2PO second-moment budget (arXiv 2510.01161, every model in the paper)."""
    region: str = "harmful"
    """Candidates: 'harmful' = (A>0, r>1) or (A<0, r<1) (paper); 'all' = every valid token (not AReaL's rule: see m2po_areal)."""
    behaviour: str = "old_log_prob"
    """Ratio denominator: 'old_log_prob' as verl passes it; 'rollout' = rebuilt from token IS weights."""

    def __post_init__(self):
        super_post_init = getattr(super(), "__post_init__", None)
        if super_post_init is not None:
            super_post_init()
        LossConfig(tau=self.tau, region=self.region)  # validates tau > 0 and the region
        check_choice("behaviour", self.behaviour, BEHAVIOURS)


def _policy_fields(config):
    """(LossConfig, behaviour) from ``config.policy_loss``; defaults when config is None."""
    if config is None:
        return LossConfig(), "old_log_prob"
    policy = config.policy_loss
    if isinstance(policy, M2POPolicyLossConfig) or (isinstance(policy, DictConfig) and "tau" in policy):
        return LossConfig(tau=float(policy.tau), region=str(policy.region)), str(policy.behaviour)
    raise ValueError(
        "loss_mode m2po needs its config: set actor_rollout_ref.actor.policy_loss._target_="
        "m2po_lab.integrations.verl.M2POPolicyLossConfig (then +policy_loss.tau=..., +policy_loss.region=...)"
    )


def _make_loss(name: str):
    core = get_loss(name)

    def policy_loss(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config=None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, behaviour = _policy_fields(config)
        mask = response_mask.bool()  # (bs, T)
        weights = rollout_is_weights  # (bs, T) or None
        if behaviour == "rollout":
            if weights is None:
                raise ValueError(
                    "policy_loss.behaviour=rollout needs rollout_is_weights: set "
                    "algorithm.rollout_correction.rollout_is=token with a threshold that never truncates"
                )
            log_w = torch.where(mask, weights.detach().log(), torch.zeros_like(weights))  # log pi_old/pi_rollout
            old_log_prob = old_log_prob - log_w  # (bs, T) log pi_rollout
            weights = None  # already inside the ratio
        per_token_loss, metrics = core(log_prob, old_log_prob, advantages, mask, cfg=cfg)  # (bs, T)
        if weights is not None:
            per_token_loss = per_token_loss * weights
        global_batch_info = {} if config is None else config.global_batch_info
        loss = agg_loss(
            loss_mat=per_token_loss, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **global_batch_info
        )
        names = sorted(metrics)
        values = torch.stack([metrics[k].detach().float() for k in names]).tolist()  # one host sync
        return loss, {f"actor/{k}": v for k, v in zip(names, values)}

    policy_loss.__name__ = f"compute_policy_loss_{name}"
    policy_loss.__doc__ = (
        f"verl policy loss '{name}': m2po_lab.get_loss('{name}') per token, times rollout_is_weights, "
        "reduced by verl's agg_loss with config.global_batch_info. Shapes (bs, response_length)."
    )
    return policy_loss


def register() -> None:
    """Register ``m2po`` and ``m2po_released`` with verl (idempotent; the ``verl.plugins`` entry point)."""
    for name in LOSS_MODES:
        if name not in POLICY_LOSS_REGISTRY:
            register_policy_loss(name)(_make_loss(name))


register()
