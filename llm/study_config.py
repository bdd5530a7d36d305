"""The LLM staleness study's configuration and presets (``m2po-lab study-llm``).

One frozen dataclass: the sweep (methods x staleness x seeds), the tiny model and its
warm start (trained once per study, shared by every run), and the RL settings every run
gets (:func:`train_config` turns a cell of the sweep into a :class:`TrainConfig`). The CLI
is generated from the fields. Defaults quote the paper (arXiv 2510.01161) where it sets a
value: tau 0.04, 8 responses per prompt, 4 updates per rollout step, staleness 256,
temperature 1, gradient-norm clip 1.0.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from m2po_lab._checks import check_choice, check_nonnegative_int, check_positive
from m2po_lab.aggregation import AGG_MODES
from m2po_lab.cliutil import config_from_dict, replace_config
from m2po_lab.losses import LOSSES, LossConfig

from .config import MASK_SCOPES, OPTIMIZERS, TrainConfig
from .tasks import REWARD_MODES


@dataclass(frozen=True)
class LLMStudyConfig:
    """A staleness sweep of the LLM trainer on the tiny model: every (method, staleness, seed) run."""

    methods: tuple[str, ...] = ("grpo", "gspo", "m2po", "no_tr")
    """Registered loss names (any of ``m2po_lab.losses.LOSSES``); the sweep is methods x staleness x seeds."""
    staleness: tuple[int, ...] = (0, 256)
    """Staleness k in optimizer updates (multiples of updates_per_step); the paper's Table 1: 0 and 256."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """RL seeds (prompt draws and sampling); the warm start is the same for all of them."""
    n_digits: int = 3
    """Addition task: operands have up to this many digits."""
    little_endian: bool = True
    """Numbers least-significant digit first (123 + 456 = 579 is prompt "321+654=", answer "975")."""
    fixed_width: bool = True
    """Operands zero-padded to n_digits, answers to n_digits + 1 (prompt "120+300=" for 21 + 3, answer "4200")."""
    reward_mode: str = "exact"
    """"exact" (the answer string), "digits" (partial credit per digit), "flexible" or "strict" (decimal numbers only)."""
    hidden: int = 64
    """Tiny Qwen2: hidden size."""
    layers: int = 2
    """Tiny Qwen2: decoder layers."""
    heads: int = 4
    """Tiny Qwen2: attention heads."""
    extra_tokens: int = 0
    """Tokens added to the ~95-character vocabulary that the task never writes (a long tail sampled at temperature 1)."""
    warm_start_steps: int = 3000
    """Supervised warm-start steps (once per study; every run starts from its weights)."""
    warm_start_lr: float = 1e-3
    """Warm-start AdamW peak learning rate (linear warmup, then cosine decay to a tenth). At 3e-3 the SFT loss
    leaves its plateau on some seeds only (docs/lab-notes/2026-12-03-llm-staleness.md); at 1e-3 on all three."""
    warm_start_batch: int = 128
    """Demonstrations per warm-start step."""
    warm_start_seed: int = 0
    """Seeds the model's initial weights and the warm-start data."""
    carry_drop: float = 0.6
    """The warm-start teacher forgets each carry with this probability: every carry is a fork, other tokens are fixed."""
    marked_frac: float = 0.0
    """Fraction of demonstrations written `#### N` (0: bare answers; there is no format for RL to learn)."""
    label_smoothing: float = 0.0
    """Warm-start label smoothing: keeps about eps / V of probability on every token (a pretrained LM's tail)."""
    warm_start_min_acc: float = 0.5
    """The warm start is refused (nothing trained from it) if its greedy accuracy on sums without a carry, which the
    teacher always gets right, is below this: it stayed on the SFT loss plateau. 0: no check."""
    lr: float = 1e-4
    """RL learning rate of every run (far above the paper's 1e-6 with AdamW: a tiny model)."""
    optimizer: str = "adamw"
    """RL optimizer of every run: "adamw" (the paper's) or "sgd" (no per-parameter normalisation)."""
    updates: int = 1200
    """Optimizer updates per run."""
    prompts_per_step: int = 16
    """Prompts per rollout step (the paper: 256)."""
    group_size: int = 8
    """Responses per prompt, GRPO group size G (the paper: 8)."""
    updates_per_step: int = 4
    """Optimizer updates (mini-batches) per rollout step (the paper: 4)."""
    micro_batch_size: int = 256
    """Sequences per forward/backward inside a mini-batch."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip (0: none); part of the setup, as in the paper's runs."""
    weight_decay: float = 0.0
    """Weight decay of the RL optimizer."""
    max_new_tokens: int = 6
    """Maximum response length in tokens (a 4-digit answer + EOS fits, with one to spare)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts and of sampled evaluation (the paper: 1.0)."""
    agg_mode: str = "token-mean"
    """Loss aggregation (M2PO's objective is token-mean)."""
    mask_scope: str = "minibatch"
    """M2PO's mask over the "minibatch" (paper Algorithm 1) or each "microbatch"."""
    loss: LossConfig = LossConfig()
    """Hyperparameters of every method (tau 0.04, GRPO eps 0.2 / 0.2, GSPO 3e-4 / 4e-4)."""
    eval_every: int = 50
    """Evaluate held-out accuracy (greedy and sampled) every this many updates."""
    eval_prompts: int = 512
    """Held-out prompts per evaluation."""
    hist_every: int = 25
    """Log importance-weight histograms and the amplified-token record every this many updates."""
    checkpoint_every: int = 100
    """Checkpoint each run every this many updates (at rollout-step boundaries)."""
    device: str = "cpu"
    """Where every run and the warm start train: "cpu", "cuda" or "cuda:i" (runs share it)."""

    def __post_init__(self):
        if not self.methods:
            raise ValueError("methods must name at least one loss; accepted: " + ", ".join(sorted(LOSSES)))
        for m in self.methods:
            check_choice("methods", m, LOSSES)
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed, e.g. (0,)")
        if not self.staleness:
            raise ValueError("staleness must hold at least one value, e.g. (0, 256)")
        for name in ("methods", "staleness", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                dup = sorted({v for v in values if values.count(v) > 1})
                raise ValueError(f"{name} lists {dup} more than once; each value names one set of runs")
        for sd in self.seeds:
            check_nonnegative_int("seeds", sd)
        for s in self.staleness:
            check_nonnegative_int("staleness", s)
        check_choice("reward_mode", self.reward_mode, REWARD_MODES)
        if (self.little_endian or self.fixed_width) and self.reward_mode not in ("exact", "digits"):
            raise ValueError(f"reward_mode={self.reward_mode!r} reads decimal numbers; little_endian and fixed_width "
                             "answers need reward_mode 'exact' or 'digits' (or --no-little-endian --no-fixed-width)")
        check_choice("agg_mode", self.agg_mode, AGG_MODES)
        check_choice("mask_scope", self.mask_scope, MASK_SCOPES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not re.fullmatch(r"cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"device={self.device!r} is not accepted; accepted: 'cpu', 'cuda', 'cuda:N'")
        for name in ("n_digits", "hidden", "layers", "heads", "warm_start_batch", "updates", "prompts_per_step",
                     "updates_per_step", "micro_batch_size", "max_new_tokens", "eval_every", "eval_prompts",
                     "hist_every"):
            check_positive(name, getattr(self, name))
            check_nonnegative_int(name, getattr(self, name))
        for name in ("warm_start_steps", "warm_start_seed", "extra_tokens", "checkpoint_every"):
            check_nonnegative_int(name, getattr(self, name))
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by heads={self.heads}")
        if self.extra_tokens > 20000:
            raise ValueError(f"extra_tokens must be at most 20000, got {self.extra_tokens}")
        for name in ("carry_drop", "marked_frac", "warm_start_min_acc"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
        if not (isinstance(self.label_smoothing, (int, float)) and 0.0 <= self.label_smoothing < 1.0):
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {self.label_smoothing!r}")
        for name in ("warm_start_lr", "lr", "temperature"):
            check_positive(name, getattr(self, name))
        for name in ("weight_decay", "max_grad_norm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.loss, LossConfig):
            raise ValueError(f"loss must be a LossConfig, got {type(self.loss).__name__}")
        # every run's TrainConfig must be valid too (staleness multiples, divisibility, ...): check one per staleness
        for s in self.staleness:
            train_config(self, self.methods[0], s, self.seeds[0], "model")

    @property
    def cells(self) -> list[tuple[str, int, int]]:
        """Every (method, staleness, seed) of the sweep, seed-major: all cells of the first seed come first."""
        return [(m, s, sd) for sd in self.seeds for s in self.staleness for m in self.methods]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LLMStudyConfig":
        return config_from_dict(cls, d)


def train_config(cfg: LLMStudyConfig, method: str, staleness: int, seed: int, model: str) -> TrainConfig:
    """The :class:`TrainConfig` of one run of the study: RL from the shared warm start in ``model``."""
    return TrainConfig(
        model=str(model), task="arith", n_digits=cfg.n_digits, little_endian=cfg.little_endian,
        fixed_width=cfg.fixed_width,
        reward_mode=cfg.reward_mode, staleness=staleness,
        method=method, loss=cfg.loss, agg_mode=cfg.agg_mode, mask_scope=cfg.mask_scope,
        prompts_per_step=cfg.prompts_per_step, group_size=cfg.group_size, updates_per_step=cfg.updates_per_step,
        micro_batch_size=cfg.micro_batch_size, lr=cfg.lr, optimizer=cfg.optimizer, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        updates=cfg.updates, eval_every=cfg.eval_every, eval_prompts=cfg.eval_prompts, hist_every=cfg.hist_every,
        warm_start_steps=0, seed=seed, checkpoint_every=cfg.checkpoint_every, device=cfg.device, threads=1,
    )


PRESETS: dict[str, LLMStudyConfig] = {
    # The paper's Table 1 columns plus no_tr, on a CPU: 4 methods x {0, 256} x 3 seeds = 24 runs of
    # a 0.1M-parameter Qwen2 on 3-digit addition from one warm start whose teacher forgets half
    # the carries (docs/llm.md, "The staleness study"). <= 30 min on 2 cores with --workers 2.
    "tiny-table1": LLMStudyConfig(),
    # The same study sized for one GPU (not run on this CPU-only machine): a 4x wider, 2x deeper
    # model, the paper's batch (64 prompts x 8 per update, 256 per rollout step) and 3000 updates.
    # Runs stay one process each; with --workers 4 they share the GPU.
    "gpu-table1": LLMStudyConfig(
        hidden=256, layers=4, heads=8, warm_start_steps=6000, prompts_per_step=256, micro_batch_size=512,
        updates=3000, eval_every=100, hist_every=50, checkpoint_every=200, device="cuda",
    ),
    # Seconds: the tests' and a first look's configuration (2 methods, 1 seed, a few updates).
    "quick": LLMStudyConfig(
        methods=("grpo", "m2po"), staleness=(0, 8), seeds=(0,), n_digits=1, warm_start_steps=100,
        warm_start_lr=3e-3,
        warm_start_batch=64, carry_drop=0.0, marked_frac=0.0, lr=1e-3, updates=8, prompts_per_step=4, group_size=4,
        updates_per_step=2, micro_batch_size=8, max_new_tokens=4, eval_every=4, eval_prompts=16, hist_every=4,
        checkpoint_every=4, warm_start_min_acc=0.0,
    ),
}


def get_preset(name: str, **overrides) -> LLMStudyConfig:
    """A preset with fields replaced by ``overrides`` (None values ignored; ``loss`` may be a partial dict)."""
    check_choice("preset", name, PRESETS)
    return replace_config(PRESETS[name], **overrides)
