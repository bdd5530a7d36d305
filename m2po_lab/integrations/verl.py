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
  multiply the weights in a second time. verl shows the policy loss the rollout-correction
  settings only in bypass mode, so add ``MIRROR`` (the policy loss's copy of
  ``algorithm.rollout_correction``); settings that would make the rebuilt log-probs wrong
  (sequence weights, truncation, ``rollout_is_batch_normalize``) are refused when the
  config is built.

Scope: verl calls the loss once per micro-batch on each rank, so by default the mask is
decided per micro-batch (as in the released code). ``policy_loss.mask_scope=dp_group``
decides once over the call's micro-batch on every data-parallel rank (one global
Algorithm 1, :func:`m2po_lab.losses.batch_state` with the group; metrics merged by
:func:`m2po_lab.distributed.global_metrics`); with ``ppo_micro_batch_size_per_gpu`` equal
to the mini-batch per GPU that is exactly the paper's mini-batch mask, and :func:`dp_group`
refuses every configuration where it would not be (it checks the tokens on every call).

Tested with verl 0.9.1 on CPU (no GPU extras). Needs the extra: ``pip install 'm2po-lab[verl]'``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from m2po_lab._checks import check_choice
from m2po_lab.distributed import global_metrics
from m2po_lab.losses import LossConfig, batch_state, get_loss

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
MASK_SCOPES = ("micro_batch", "dp_group")


@dataclass
class M2POPolicyLossConfig(PolicyLossConfig):
    """verl's PolicyLossConfig plus M2PO's fields (``policy_loss._target_`` selects it)."""

    tau: float = 0.04
    """M2PO second-moment budget (arXiv 2510.01161, every model in the paper)."""
    region: str = "harmful"
    """Candidates: 'harmful' = (A>0, r>1) or (A<0, r<1) (paper); 'all' = every valid token (not AReaL's rule: see m2po_areal)."""
    behaviour: str = "old_log_prob"
    """Ratio denominator: 'old_log_prob' as verl passes it; 'rollout' = rebuilt from token IS weights."""
    mask_scope: str = "micro_batch"
    """'micro_batch': each call decides on its micro-batch (the released code); 'dp_group': one decision over
    the micro-batch of every data-parallel rank, the paper's mini-batch when each rank holds one micro-batch."""

    def __post_init__(self):
        super_post_init = getattr(super(), "__post_init__", None)
        if super_post_init is not None:
            super_post_init()
        LossConfig(tau=self.tau, region=self.region)  # validates tau > 0 and the region
        check_choice("behaviour", self.behaviour, BEHAVIOURS)
        check_choice("mask_scope", self.mask_scope, MASK_SCOPES)
        if self.behaviour == "rollout":
            check_rollout_correction(self.rollout_correction)


MIRROR = "actor_rollout_ref.actor.policy_loss.rollout_correction='${algorithm.rollout_correction}'"
"""The override that shows the loss verl's rollout-correction settings (decoupled mode leaves them at the defaults)."""


def check_rollout_correction(rc) -> None:
    """``behaviour=rollout`` rebuilds log pi_rollout from the weights: refuse settings that make that wrong.

    The weights must be per token, never truncated (threshold >= e^20, verl's clamp of the
    log weight) and not divided by their batch mean (``rollout_is_batch_normalize``), and
    the loss must see the settings: verl copies ``algorithm.rollout_correction`` into the
    policy loss only in bypass mode, so ``MIRROR`` does it here.
    """
    get = rc.get if hasattr(rc, "get") else lambda k, d=None: getattr(rc, k, d)
    is_level, threshold = get("rollout_is", None), get("rollout_is_threshold", None)
    if is_level == "sequence" and threshold == 2.0 and not get("rollout_is_batch_normalize", False):
        raise ValueError(
            "policy_loss.behaviour=rollout must see algorithm.rollout_correction (verl leaves the policy loss's copy "
            f"at its defaults outside bypass mode): add {MIRROR}"
        )
    if get("bypass_mode", False):
        raise ValueError("policy_loss.behaviour=rollout needs decoupled mode: set algorithm.rollout_correction."
                         "bypass_mode=false (bypass mode replaces this loss)")
    if is_level != "token":
        raise ValueError(f"policy_loss.behaviour=rollout needs algorithm.rollout_correction.rollout_is=token, got "
                         f"{is_level!r}")
    if get("rollout_is_batch_normalize", False):
        raise ValueError("policy_loss.behaviour=rollout cannot rebuild log pi_rollout from batch-normalised weights: "
                         "set algorithm.rollout_correction.rollout_is_batch_normalize=false")
    try:
        never_truncates = float(threshold) >= math.exp(20)
    except (TypeError, ValueError):
        never_truncates = False
    if not never_truncates:
        raise ValueError(f"policy_loss.behaviour=rollout needs weights that are never truncated: set "
                         f"algorithm.rollout_correction.rollout_is_threshold=1e9 (got {threshold!r}; at least e^20)")


def _policy_fields(config):
    """(LossConfig, behaviour, mask_scope) from ``config.policy_loss``; defaults when config is None."""
    if config is None:
        return LossConfig(), "old_log_prob", "micro_batch"
    policy = config.policy_loss
    if isinstance(policy, M2POPolicyLossConfig) or (isinstance(policy, DictConfig) and "tau" in policy):
        scope = str(getattr(policy, "mask_scope", "micro_batch"))
        check_choice("mask_scope", scope, MASK_SCOPES)
        return LossConfig(tau=float(policy.tau), region=str(policy.region)), str(policy.behaviour), scope
    raise ValueError(
        "loss_mode m2po needs its config: set actor_rollout_ref.actor.policy_loss._target_="
        "m2po_lab.integrations.verl.M2POPolicyLossConfig (then +policy_loss.tau=..., +policy_loss.region=...)"
    )


def dp_group(config, mask: torch.Tensor):
    """The data-parallel group for ``mask_scope=dp_group`` (None on one process), after checking the call is a mini-batch.

    The decision is the paper's (Algorithm 1 over the optimizer mini-batch) only when each
    rank's call holds its whole share of the mini-batch, so: FSDP without sequence
    parallelism (the dp group is the world), no dynamic batch sizes (ranks could make
    different numbers of calls and wait on each other), and the valid tokens of this call,
    summed over ranks, equal verl's ``global_batch_info["batch_num_tokens"]`` (checked on
    every call; every rank sees the same numbers, so every rank raises together).
    """
    import torch.distributed as dist

    if getattr(config, "use_dynamic_bsz", False):
        raise ValueError("policy_loss.mask_scope=dp_group needs actor.use_dynamic_bsz=False: with dynamic batch "
                         "sizes ranks make different numbers of loss calls")
    if str(getattr(config, "strategy", "fsdp")) == "megatron" or int(
            getattr(config, "ulysses_sequence_parallel_size", 1) or 1) > 1:
        raise ValueError("policy_loss.mask_scope=dp_group supports FSDP without sequence parallelism "
                         "(ulysses_sequence_parallel_size=1), where the data-parallel group is the world")
    group = dist.group.WORLD if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None
    total = mask.sum().to(torch.float64)
    if group is not None:
        total = total.clone()
        dist.all_reduce(total, group=group)
    expected = (getattr(config, "global_batch_info", None) or {}).get("batch_num_tokens")
    if expected is None or int(total) != int(expected):
        raise ValueError(
            f"policy_loss.mask_scope=dp_group decides over one mini-batch per call, but this call holds "
            f"{int(total)} valid tokens over all ranks and the mini-batch {expected}: set "
            "actor.ppo_micro_batch_size_per_gpu to the mini-batch per GPU (ppo_mini_batch_size * rollout.n / dp)"
        )
    return group


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
        cfg, behaviour, scope = _policy_fields(config)
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
        group, state = None, {}
        if scope == "dp_group":  # one decision over every rank's micro-batch: a collective per call
            group = dp_group(config, mask)
            state = batch_state(name, log_prob.detach(), old_log_prob, advantages, mask, cfg, group=group)
        per_token_loss, metrics = core(log_prob, old_log_prob, advantages, mask, cfg=cfg, **state)  # (bs, T)
        if group is not None:
            metrics = global_metrics(metrics, log_prob.detach() - old_log_prob, mask, group)
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
