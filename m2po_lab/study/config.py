"""The toy staleness study's configuration and presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from toy_envs.forking_text import REWARD_MODES as FORK_REWARDS
from toy_envs.forking_text import ForkingTextConfig

from .._checks import check_choice, check_nonnegative_int, check_positive
from ..aggregation import AGG_MODES
from ..cliutil import config_from_dict, replace_config
from ..losses import LOSSES, LossConfig
from .ages import age_bound, check_age_weights


@dataclass(frozen=True)
class StudyConfig:
    """One staleness study: every (method, staleness, seed) run trains as one batched model."""

    methods: tuple[str, ...] = ("grpo", "no_tr", "m2po")
    """Registered loss names to compare (any of ``m2po_lab.losses.LOSSES``)."""
    staleness: tuple[int, ...] = (0, 32, 64, 128, 256)
    """Staleness k in optimizer updates (multiples of updates_per_step), as in the paper. With ``ages``: 0 (on-policy) and the ages' bound."""
    ages: tuple[float, ...] = ()
    """Variable ages: P(age = a) proportional to ages[a], a = 0, 1, ... optimizer updates (e.g. a simulated system's); the runs at staleness len(ages) - 1 draw one age per group (m2po_lab.study.ages). Empty: every run is stale-k."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per seed; a seed fixes the initial policy and the sampling stream."""
    updates: int = 1000
    """Optimizer updates per run."""
    updates_per_step: int = 4
    """Mini-batch updates per rollout batch (the paper: 4)."""
    prompts_per_step: int = 32
    """Prompts per rollout batch."""
    group_size: int = 8
    """Responses per prompt (GRPO group size G; the paper: 8)."""
    lr: float = 5e-4
    """Adam learning rate of the RL phase."""
    max_grad_norm: float = 1.0
    """Per-run gradient-norm clip (0 disables)."""
    agg_mode: str = "token-mean"
    """Loss aggregation (``m2po_lab.aggregation.AGG_MODES``)."""
    loss: LossConfig = LossConfig()
    """Hyperparameters of every method (tau 0.04 and GRPO's eps 0.2 / 0.2, as in the paper)."""
    n_prompts: int = 64
    """Forking-text task: number of prompts."""
    length: int = 24
    """Forking-text task: response length L."""
    vocab_size: int = 8
    """Forking-text task: vocabulary size V."""
    n_forks: int = 3
    """Forking-text task: forking positions."""
    reward: str = "graded"
    """Forking-text task: "graded", "binary" or "partial" (``toy_envs.forking_text``)."""
    task_seed: int = 0
    """Seed of the task tables (same for every run)."""
    hidden: int = 64
    """Policy MLP width."""
    warm_start_steps: int = 800
    """Supervised warm-start steps (fixed positions) before RL."""
    warm_start_lr: float = 1e-2
    """Adam learning rate of the warm start."""
    fork_prior: float = 0.3
    """Warm-start fork target: fork_prior * correct + (1 - fork_prior) * uniform (0: uniform)."""
    eval_every: int = 50
    """Evaluate (sampled reward on every prompt) every this many updates."""
    eval_samples: int = 4
    """Samples per prompt at evaluation."""
    hist_every: int = 100
    """Record importance-weight histograms and entropy-by-ratio bins every this many updates."""
    checkpoint_every: int = 200
    """Write a checkpoint every this many updates (0 disables)."""

    def __post_init__(self):
        if not self.methods:
            raise ValueError("methods must name at least one loss; accepted: " + ", ".join(sorted(LOSSES)))
        for m in self.methods:
            check_choice("methods", m, LOSSES)
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed, e.g. (0,)")
        if not self.staleness:
            raise ValueError("staleness must hold at least one value, e.g. (0, 256)")
        for name in ("updates", "updates_per_step", "prompts_per_step", "eval_every", "hist_every", "eval_samples"):
            check_positive(name, getattr(self, name))
            check_nonnegative_int(name, getattr(self, name))
        for s in self.staleness:
            check_nonnegative_int("staleness", s)
            if s % self.updates_per_step:
                raise ValueError(
                    f"staleness={s} must be a multiple of updates_per_step={self.updates_per_step} "
                    "(stale batches are whole rollout steps)"
                )
        for sd in self.seeds:
            check_nonnegative_int("seeds", sd)
        self._check_ages()
        if self.group_size < 2:
            raise ValueError(f"group_size must be an integer >= 2, got {self.group_size!r}")
        if self.prompts_per_step % self.updates_per_step:
            raise ValueError(
                f"prompts_per_step={self.prompts_per_step} must be divisible by updates_per_step="
                f"{self.updates_per_step} (each mini-batch holds whole groups)"
            )
        check_choice("agg_mode", self.agg_mode, AGG_MODES)
        check_choice("reward", self.reward, FORK_REWARDS)
        check_positive("lr", self.lr)
        check_nonnegative_int("checkpoint_every", self.checkpoint_every)
        check_nonnegative_int("warm_start_steps", self.warm_start_steps)
        for name in ("methods", "staleness", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                dup = sorted({v for v in values if values.count(v) > 1})
                raise ValueError(f"{name} lists {dup} more than once; each value names one set of runs")
        check_positive("warm_start_lr", self.warm_start_lr)
        check_nonnegative_int("hidden", self.hidden)
        if self.hidden < 1:
            raise ValueError(f"hidden must be an integer >= 1, got {self.hidden!r}")
        if not (isinstance(self.fork_prior, (int, float)) and 0 <= self.fork_prior <= 1):
            raise ValueError(f"fork_prior must be a number in [0, 1], got {self.fork_prior!r}")
        if not (isinstance(self.max_grad_norm, (int, float)) and math.isfinite(self.max_grad_norm)
                and self.max_grad_norm >= 0):
            raise ValueError(f"max_grad_norm must be a finite number >= 0 (0 disables clipping), "
                             f"got {self.max_grad_norm!r}")
        if not isinstance(self.loss, LossConfig):
            raise ValueError(f"loss must be a LossConfig, got {type(self.loss).__name__}")
        self.task_config()  # validates n_prompts, length, vocab_size, n_forks, task_seed

    def _check_ages(self):
        check_age_weights(self.ages)
        bound = age_bound(self.ages)
        if bound is None:
            return
        if bound not in self.staleness or any(s not in (0, bound) for s in self.staleness):
            raise ValueError(f"with ages (bound {bound} updates), staleness must be ({bound},) or (0, {bound}): the "
                             f"runs at {bound} draw their ages, those at 0 are on-policy; got {self.staleness}")

    def age_bound(self) -> int | None:
        """The staleness level whose runs draw variable ages (the largest age of ``ages``); None: stale-k only."""
        return age_bound(self.ages)

    def task_config(self) -> ForkingTextConfig:
        """The forking-text task of this study."""
        return ForkingTextConfig(n_prompts=self.n_prompts, length=self.length, vocab_size=self.vocab_size,
                                 n_forks=self.n_forks, reward=self.reward, seed=self.task_seed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StudyConfig":
        return config_from_dict(cls, d)


PRESETS: dict[str, StudyConfig] = {
    # The paper's five phenomena at toy scale (docs/study.md): 45 runs, about 3 minutes on 2 CPU cores.
    "default": StudyConfig(),
    # A dip that every token-level objective shares: binary reward and a 4x larger lr make
    # forks learn fast from stale batches while the damage this does to fixed positions is
    # invisible in them (docs/study.md, "The erosion preset").
    "erosion": StudyConfig(methods=("grpo", "no_tr", "m2po", "gspo"), staleness=(0, 256), reward="binary", lr=2e-3),
    # Partial credit for fixed positions: a response with an error can beat its group, so
    # stale samples of errors the policy now makes often get A > 0 and r >> 1 -- the tokens
    # M2PO masks (docs/study.md, "The partial preset").
    "partial": StudyConfig(staleness=(0, 256), reward="partial", lr=2e-3),
    "quick": StudyConfig(
        methods=("grpo", "m2po"), staleness=(0, 8), seeds=(0,), updates=40, eval_every=10, hist_every=20,
        checkpoint_every=20, warm_start_steps=300, n_prompts=16, prompts_per_step=16,
    ),
}


def get_preset(name: str, **overrides) -> StudyConfig:
    """A preset with fields replaced by ``overrides`` (None values are ignored; ``loss`` may be a partial dict)."""
    check_choice("preset", name, PRESETS)
    return replace_config(PRESETS[name], **overrides)
