"""M2PO (and every other m2po-lab loss) inside TRL's ``GRPOTrainer``.

``M2POGRPOTrainer`` overrides one hook, ``_compute_loss(model, inputs)``: it takes the
completion log-probs of the current policy (``logp``), TRL's ``old_per_token_logps``
(``old_logp``, the policy that generated the completions), ``advantages`` and
``completion_mask``, and minimises ``get_loss(name)(logp, old_logp, adv, mask, cfg)``
reduced by :func:`m2po_lab.aggregation.aggregate`. Everything else (generation,
rewards, group advantages, the optimizer) is TRL's.

Stale data in TRL. TRL generates one batch every ``steps_per_generation * num_iterations``
micro-steps and cuts it into ``steps_per_generation`` micro-batches. Only when that
period does not divide ``gradient_accumulation_steps`` are some micro-batches trained
after an optimizer update, and only then does TRL compute ``old_per_token_logps``;
otherwise ``logp == old_logp``, the ratio is identically 1 and M2PO masks nothing, so the
trainer refuses such a configuration (``ValueError``). Staleness in TRL is *reuse*: a
batch is trained 0, 1, ..., K - 1 updates after it was generated
(K = steps_per_generation * num_iterations / gradient_accumulation_steps), not a fixed
delay of s updates as in the paper's stale-k queue (arXiv 2510.01161, Sec. 3).

Scope of M2PO's mask (``mask_scope="optimizer_batch"``, the paper's Algorithm 1 over the
optimizer mini-batch). TRL calls ``_compute_loss`` once per micro-batch, but every
micro-batch of an optimizer step is already in TRL's generation buffer when the step
begins. On its first micro-batch the trainer runs one extra no-grad forward over all the
micro-batches of the step, decides the mask once over the micro-batches of every
data-parallel process (:func:`m2po_lab.losses.batch_state` with the process group: one
global Algorithm 1, exactly the mask one process would compute on the whole optimizer
batch; :mod:`m2po_lab.distributed` states the communication) and hands each micro-batch
its slice (:func:`m2po_lab.losses.slice_state`). This needs each optimizer step to lie inside one
generation: ``(steps_per_generation * num_iterations) % gradient_accumulation_steps == 0``;
otherwise (or with ``mask_scope="micro_batch"``, the released code's choice) each
micro-batch decides its own mask. Cost: one extra forward pass per optimizer step.

Metrics: the loss's tensors (``clip/frac``, ``is/m2``, ``m2po/m2_before``,
``is/ratio_max``, ...) of every process's rows, merged by each key's rule
(:data:`m2po_lab.metrics.SCHEMA`: token-weighted means, max, min, the p99 recomputed), are
appended to TRL's ``self._metrics`` with one host sync: once per optimizer step in the
optimizer-batch scope (computed on the whole step), once per micro-batch otherwise. TRL's
``log`` averages them over the logging interval.

Not applied, refused with a clear error: TRL's KL term (``beta``), entropy bonus
(``entropy_coef``, ``use_adaptive_entropy``), router aux loss of MoE models
(``router_aux_loss_coef``), top-entropy masking and its off-policy mask.

Tested with trl 1.16.0 (``TESTED_TRL``). The hook and the private helpers it uses
(``_get_per_token_logps_and_entropies``, ``_buffered_inputs``, ``_step``, ``_metrics``)
change between TRL releases; another version gets a warning.
"""

from __future__ import annotations

import warnings

import torch

from m2po_lab.aggregation import aggregate
from m2po_lab.distributed import global_metrics
from m2po_lab.losses import batch_state, get_loss, slice_state

try:
    import trl
    from trl import GRPOTrainer
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "m2po_lab.integrations.trl needs TRL: pip install 'm2po-lab[trl]' (tested with trl 1.16)"
    ) from err

from .trl_config import MASK_SCOPES, PolicyLossArgs, check_args, generations_reused  # noqa: E402 (needs TRL first)

__all__ = ["MASK_SCOPES", "TESTED_TRL", "M2POGRPOTrainer", "PolicyLossArgs", "check_args", "generations_reused"]

TESTED_TRL = (1, 16)
"""TRL major.minor this adapter was tested against (pyproject extra: trl>=1.16,<1.17)."""

# Optional multimodal inputs TRL forwards to the model (names as in TRL 1.16's _compute_loss).
_MODEL_KWARGS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


class M2POGRPOTrainer(GRPOTrainer):
    """TRL ``GRPOTrainer`` whose policy loss is ``m2po_lab.get_loss(policy_loss.loss)``.

    Args are ``GRPOTrainer``'s, plus ``policy_loss`` (a :class:`PolicyLossArgs`; default
    M2PO with tau 0.04 over the optimizer batch). ``GRPOConfig.loss_type``, ``epsilon``,
    ``epsilon_high`` and ``delta`` are not used: the loss and its clip widths come from
    ``policy_loss``. TRL's vLLM importance-sampling ratio, when present, multiplies the
    per-token loss as in TRL.
    """

    def __init__(self, model, reward_funcs=None, args=None, *rest, policy_loss: PolicyLossArgs | None = None, **kw):
        check_args(args)
        if tuple(int(p) for p in trl.__version__.split(".")[:2]) != TESTED_TRL:
            warnings.warn(
                f"m2po_lab.integrations.trl was tested with trl {TESTED_TRL[0]}.{TESTED_TRL[1]}.x, found "
                f"{trl.__version__}; it overrides GRPOTrainer._compute_loss and uses private helpers",
                stacklevel=2,
            )
        self.policy_loss = PolicyLossArgs() if policy_loss is None else policy_loss
        self._window = None  # (optimizer step, {buffer index: state}, num_tokens, num_seqs)
        super().__init__(model, reward_funcs, args, *rest, **kw)
        if getattr(self, "aux_loss_enabled", False):
            raise ValueError(
                f"M2POGRPOTrainer does not add TRL's router aux loss (router_aux_loss_coef="
                f"{self.router_aux_loss_coef!r} on a Mixture-of-Experts model): set router_aux_loss_coef=0.0"
            )
        generate_every = self.args.steps_per_generation * self.num_iterations
        self._window_scope = (
            self.policy_loss.mask_scope == "optimizer_batch"
            and generate_every % self.args.gradient_accumulation_steps == 0
        )
        if self.policy_loss.mask_scope == "optimizer_batch" and not self._window_scope:
            warnings.warn(
                "mask_scope='optimizer_batch' needs (steps_per_generation * num_iterations) % "
                "gradient_accumulation_steps == 0 (each optimizer step inside one generation); "
                "deciding the mask per micro-batch instead",
                stacklevel=2,
            )

    # ------------------------------------------------------------ per micro-batch
    def _compute_loss(self, model, inputs):
        mask = self._loss_mask(inputs)  # (B, T) bool
        logp = self._completion_logps(model, inputs)  # (B, T), carries the gradient
        old_logp = inputs.get("old_per_token_logps")
        if old_logp is None:  # eval: TRL does not compute them, the batch is on-policy
            old_logp = logp.detach()
        adv = inputs["advantages"]  # (B,) or (B, T)
        state, num_tokens, num_seqs = self._loss_state(model, inputs, logp, old_logp, adv, mask)
        per_token_loss, metrics = get_loss(self.policy_loss.loss)(
            logp, old_logp, adv, mask, cfg=self.policy_loss.loss_config, **state
        )
        if "importance_sampling_ratio" in inputs:  # TRL's vLLM sampler-mismatch weight, (B, T) or (B, 1)
            per_token_loss = per_token_loss * inputs["importance_sampling_ratio"].detach()
        loss = aggregate(
            per_token_loss,
            mask,
            self.policy_loss.agg_mode,
            num_tokens=num_tokens,
            num_seqs=num_seqs,
            norm_const=self.args.max_completion_length,
        )
        if not (self.model.training and self._window_scope):  # the window logs once per optimizer step
            self._log_loss_metrics(metrics, logp.detach() - old_logp, mask)
        return loss

    def _loss_mask(self, inputs) -> torch.Tensor:
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        return mask.bool()

    def _completion_logps(self, model, inputs) -> torch.Tensor:
        """log pi_theta of the completion tokens, (B, T), through TRL's own forward helper."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        kwargs = {k: inputs.get(k) for k in _MODEL_KWARGS}
        logp, _, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, inputs["completion_ids"].size(1), **kwargs
        )
        return logp

    # ------------------------------------------------------------ optimizer-batch scope
    def _loss_state(self, model, inputs, logp, old_logp, adv, mask):
        """(batch state for this micro-batch, global token count, global sequence count).

        Training with ``mask_scope='optimizer_batch'``: decided once per optimizer step over
        all its micro-batches on all processes. Otherwise: over this micro-batch (counts None).
        """
        if not self.model.training:
            return batch_state(self.policy_loss.loss, logp, old_logp, adv, mask, self.policy_loss.loss_config), None, None
        spg = self.args.steps_per_generation
        index = self._step % spg
        if not self._window_scope or inputs is not self._buffered_inputs[index]:
            state = batch_state(self.policy_loss.loss, logp, old_logp, adv, mask, self.policy_loss.loss_config)
            # each micro-batch normalised by its own counts; TRL sums the micro-batches: average them
            return state, *self._window_counts([inputs] * self.current_gradient_accumulation_steps)
        step = self._step // self.args.gradient_accumulation_steps
        if self._window is None or self._window[0] != step:
            self._window = (step, *self._decide_window(model, step))
        return self._window[1][index], self._window[2], self._window[3]

    def _window_counts(self, batches):
        """Valid tokens and sequences of the optimizer step (micro-batches with repetition), per process share."""
        tokens = sum(self._loss_mask(b).sum() for b in batches)
        seqs = sum(len(b["completion_ids"]) for b in batches)
        counts = torch.stack([tokens.float(), tokens.new_tensor(seqs, dtype=torch.float)])  # (2,)
        counts = self.accelerator.reduce(counts, reduction="sum") / self.accelerator.num_processes
        return counts[0], counts[1]

    @torch.no_grad()
    def _decide_window(self, model, step):
        """batch_state over every micro-batch of optimizer step ``step`` on every process, sliced per micro-batch.

        This process's micro-batches are concatenated; the decision is global over the
        data-parallel group (:func:`m2po_lab.losses.batch_state` with ``group``: an all-gather
        of the candidates' M2, see :mod:`m2po_lab.distributed`). The step's metrics are
        computed here once, on the whole step, and reduced over the group by each key's rule.
        """
        ga, spg = self.args.gradient_accumulation_steps, self.args.steps_per_generation
        indices = [(step * ga + j) % spg for j in range(ga)]  # buffer slots, in training order
        unique = list(dict.fromkeys(indices))  # a slot used twice in one step counts once for the mask
        parts = []
        for i in unique:
            b = self._buffered_inputs[i]
            logp = self._completion_logps(model, b)
            old_logp = b.get("old_per_token_logps", logp)
            adv = b["advantages"]
            adv = adv[:, None].expand_as(logp) if adv.dim() == 1 else adv
            parts.append((logp, old_logp, adv, self._loss_mask(b)))
        width = max(p[0].shape[1] for p in parts)
        logp, old_logp, adv, mask = (torch.cat([_pad(p[k], width) for p in parts]) for k in range(4))  # (N, T)
        pl = self.policy_loss
        state = batch_state(pl.loss, logp, old_logp, adv, mask, pl.loss_config, group=self._dp_group())
        metrics = get_loss(pl.loss)(logp, old_logp, adv, mask, pl.loss_config, **state)[1]
        self._log_loss_metrics(metrics, logp - old_logp, mask)
        per_slot, offset = {}, 0
        for i, (p_logp, *_) in zip(unique, parts):
            n, t = p_logp.shape
            local = slice_state(state, slice(offset, offset + n))
            per_slot[i] = {k: (v if v.dim() == 0 else v[:, :t]) for k, v in local.items()}
            offset += n
        return (per_slot, *self._window_counts([self._buffered_inputs[i] for i in indices]))

    def _dp_group(self):
        """The data-parallel process group (accelerate's default group), None on one process."""
        return torch.distributed.group.WORLD if self.accelerator.num_processes > 1 else None

    # ------------------------------------------------------------ logging
    def _log_loss_metrics(self, metrics: dict[str, torch.Tensor], log_ratio, mask) -> None:
        """Append the loss's metrics of every process's rows to TRL's ``_metrics``: one host sync.

        Across processes each key merges by its rule (:data:`m2po_lab.metrics.SCHEMA`:
        token-weighted means, max, min, the p99 recomputed), never a plain average.
        """
        mode = "train" if self.model.training else "eval"
        group = self._dp_group()
        if group is not None:
            metrics = global_metrics(metrics, log_ratio, mask, group)
        names = sorted(metrics)
        values = torch.stack([metrics[k].detach().float().reshape(()) for k in names]).tolist()  # host sync, once
        for name, value in zip(names, values):
            self._metrics[mode][name].append(value)


def _pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad a (N, T) tensor with zeros (False) to (N, width)."""
    return torch.nn.functional.pad(t, (0, width - t.shape[1])) if t.shape[1] < width else t
