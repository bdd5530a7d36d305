"""A toy text task with an LLM's token statistics: mostly fixed tokens, a few forks.

A prompt id ``p`` in ``[0, n_prompts)`` asks for a response of ``length`` tokens over a
vocabulary of ``vocab_size`` tokens. Most positions are *fixed*: each prompt has one
correct token there, which a supervised warm start teaches (the policy becomes nearly
deterministic: low entropy, like most of an LLM's tokens). ``n_forks`` positions are
*forking* positions, shared by all prompts: the warm start leaves them uncertain (high
entropy), and their choice decides the reward -- the "forking tokens" that carry the
learning signal in RL on LLMs.

Correct fork token (``j``-th fork at position ``f_j``):

- ``chained=False``: ``fork_base[p, j]`` (depends on the prompt only);
- ``chained=True``: ``(fork_base[p, j] + response[f_j - 1]) mod V`` -- it also depends on
  the token just before the fork (BOS counts as ``V``, i.e. adds 0). A policy that sees
  the previous token can learn it; when forks are adjacent (e.g.
  ``fork_positions=(4, 5, 6)``) a fork's answer depends on the earlier fork *choice*,
  so the task needs credit assignment across forks.

Reward (verifiable, given once at the end of the response):

- ``reward="graded"``: ``(all fixed positions right) * (fraction of forks right)``;
- ``reward="binary"``: ``1`` iff every position is right;
- ``reward="partial"``: ``(all forks right) * (fraction of fixed positions right) ** 4``:
  a fixed-position error costs part of the reward instead of all of it, so a response
  with an error can still beat its group (A > 0). docs/study.md, "The partial preset",
  shows what that does to importance sampling under stale data.

Two ways in, same rewards (a test says so): the gymnasium step API
(``ForkingTextEnv``, one token per step) and the batch path on torch tensors
(``ForkingTextTask.sample_prompts`` / ``score``), which the training study uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from .bandit import check_choice, check_int

REWARD_MODES = ("binary", "graded", "partial")
PARTIAL_POWER = 4
"""``reward="partial"``: the exponent on the fraction of fixed positions right."""


@dataclass(frozen=True)
class ForkingTextConfig:
    """Size, layout and reward of the forking-text task."""

    n_prompts: int = 64
    """Number of distinct prompts."""
    length: int = 12
    """Response length L (tokens per response)."""
    vocab_size: int = 8
    """Vocabulary size V (token ids 0..V-1; id V is BOS in observations)."""
    n_forks: int = 3
    """Number of forking positions, 1 <= n_forks <= length."""
    fork_positions: tuple[int, ...] = ()
    """Explicit fork positions (len n_forks, distinct, in [0, length)); () draws them from seed."""
    reward: str = "graded"
    """"graded" (all fixed right x fraction of forks right), "binary" (all right) or "partial"
    (all forks right x fraction of fixed positions right ** 4)."""
    chained: bool = False
    """If True a fork's correct token also depends on the token just before it."""
    seed: int = 0
    """Seed of the task tables (targets, fork positions); same seed, same task."""

    def __post_init__(self) -> None:
        check_int("n_prompts", self.n_prompts, 1)
        check_int("length", self.length, 1)
        check_int("vocab_size", self.vocab_size, 2)
        check_int("n_forks", self.n_forks, 1, self.length)
        check_choice("reward", self.reward, REWARD_MODES)
        check_choice("chained", self.chained, (False, True))
        check_int("seed", self.seed, 0)
        fp = tuple(self.fork_positions)
        if fp and (
            len(fp) != self.n_forks
            or len(set(fp)) != len(fp)
            or not all(isinstance(f, int) and 0 <= f < self.length for f in fp)
        ):
            raise ValueError(
                f"fork_positions must be () or {self.n_forks} (n_forks) distinct integers "
                f"in [0, {self.length}) (length), got {self.fork_positions!r}"
            )


class ForkingTextTask:
    """Batch path of the forking-text task: tables and a vectorized scorer.

    Attributes (all fixed by ``cfg.seed``):
    ``fork_positions`` (F,) long, sorted; ``is_fork`` (L,) bool;
    ``fixed_target`` (P, L) long, the correct token at every fixed position (entries at
    fork positions are unused); ``fork_base`` (P, F) long.
    ``n_prompts``, ``response_len`` and ``vocab_size`` give the shape interface shared
    with ``BanditTask``.
    """

    def __init__(self, cfg: ForkingTextConfig) -> None:
        self.cfg = cfg
        P, L, V, F = cfg.n_prompts, cfg.length, cfg.vocab_size, cfg.n_forks
        g = torch.Generator().manual_seed(cfg.seed)
        if cfg.fork_positions:
            forks = torch.tensor(sorted(cfg.fork_positions), dtype=torch.long)  # (F,)
        else:
            forks = torch.randperm(L, generator=g)[:F].sort().values  # (F,)
        self.fork_positions = forks
        self.is_fork = torch.zeros(L, dtype=torch.bool).index_fill(0, forks, True)  # (L,)
        self.fixed_target = torch.randint(V, (P, L), generator=g)  # (P, L)
        self.fork_base = torch.randint(V, (P, F), generator=g)  # (P, F)
        self.n_prompts, self.response_len, self.vocab_size = P, L, V

    def sample_prompts(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` prompt ids drawn uniformly with ``generator``. (n,) long."""
        return torch.randint(self.n_prompts, (n,), generator=generator)

    def fork_target(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Correct token at each fork given the response so far. (n,), (n, L) -> (n, F)."""
        base = self.fork_base[prompts]  # (n, F)
        if not self.cfg.chained:
            return base
        bos = torch.full_like(responses[:, :1], self.vocab_size)  # (n, 1)
        prev = torch.cat([bos, responses[:, :-1]], dim=1)[:, self.fork_positions]  # (n, F)
        return (base + prev) % self.vocab_size  # (n, F)

    def fixed_ok(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Whether every fixed position of each response is right. (...,), (..., L) -> (...,) bool."""
        return ((responses == self.fixed_target[prompts]) | self.is_fork).all(dim=-1)

    def score(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Verifiable reward of each response. prompts (n,) long, responses (n, L) long -> (n,) float."""
        fork_right = responses[:, self.fork_positions] == self.fork_target(prompts, responses)  # (n, F)
        if self.cfg.reward == "partial":
            fixed = ~self.is_fork  # (L,)
            frac = ((responses == self.fixed_target[prompts]) & fixed).sum(dim=1) / fixed.sum().clamp(min=1)  # (n,)
            return fork_right.all(dim=1).float() * frac.float() ** PARTIAL_POWER  # (n,)
        fixed_ok = self.fixed_ok(prompts, responses)  # (n,)
        if self.cfg.reward == "binary":
            return (fixed_ok & fork_right.all(dim=1)).float()  # (n,)
        return fixed_ok.float() * fork_right.float().mean(dim=1)  # (n,)


class ForkingTextEnv(gym.Env):
    """Gymnasium view of ``ForkingTextTask``: one token per step, reward at the end.

    Observation ``Dict``:
    ``prompt`` Discrete(n_prompts); ``position`` Discrete(L + 1), the index of the token
    to emit next (``L`` once the response is complete); ``prev_token`` Discrete(V + 1),
    the previously emitted token (``V`` = BOS at position 0). Action: Discrete(V).
    Reward: 0 until the last token, then the task's score. ``reset(options={"prompt": p})``
    fixes the prompt; otherwise it is drawn with the env's ``np_random``.
    ``info["response"]`` holds the tokens emitted so far.
    """

    metadata = {"render_modes": []}

    def __init__(self, **kwargs) -> None:
        if "fork_positions" in kwargs:
            kwargs["fork_positions"] = tuple(kwargs["fork_positions"])
        self.cfg = ForkingTextConfig(**kwargs)
        self.task = ForkingTextTask(self.cfg)
        L, V = self.cfg.length, self.cfg.vocab_size
        self.observation_space = gym.spaces.Dict(
            {
                "prompt": gym.spaces.Discrete(self.cfg.n_prompts),
                "position": gym.spaces.Discrete(L + 1),
                "prev_token": gym.spaces.Discrete(V + 1),
            }
        )
        self.action_space = gym.spaces.Discrete(V)
        self._prompt = 0
        self._response: list[int] = []

    def _obs(self) -> dict:
        prev = self._response[-1] if self._response else self.cfg.vocab_size
        return {
            "prompt": np.int64(self._prompt),
            "position": np.int64(len(self._response)),
            "prev_token": np.int64(prev),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "prompt" in options:
            check_int("options['prompt']", options["prompt"], 0, self.cfg.n_prompts - 1)
            self._prompt = int(options["prompt"])
        else:
            self._prompt = int(self.np_random.integers(self.cfg.n_prompts))
        self._response = []
        return self._obs(), {"response": []}

    def step(self, action):
        if len(self._response) >= self.cfg.length:
            raise RuntimeError("step() called after the response was complete; call reset()")
        self._response.append(int(action))
        done = len(self._response) == self.cfg.length
        reward = 0.0
        if done:
            prompts = torch.tensor([self._prompt])  # (1,)
            responses = torch.tensor([self._response])  # (1, L)
            reward = float(self.task.score(prompts, responses)[0])
        return self._obs(), reward, done, False, {"response": list(self._response)}
