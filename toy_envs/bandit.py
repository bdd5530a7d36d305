"""A contextual bandit: the smallest "prompt -> one-token response -> verifiable reward" task.

A prompt is a context id ``c`` in ``[0, n_contexts)``; the response is one action
``a`` in ``[0, n_actions)``; the reward is read from a table drawn once from ``seed``:

- ``reward="binary"``: ``1`` if ``a == target[c]`` else ``0``;
- ``reward="graded"``: ``1`` at ``target[c]``, otherwise a per-(context, action)
  partial credit drawn uniformly from ``[0, 0.9)``.

Two ways in, same rewards (a test says so):

- the gymnasium step API (``ContextualBandit``): observation = the context id
  (``Discrete(n_contexts)``), one step per episode;
- the batch path on torch tensors (``BanditTask``): ``sample_prompts(n, generator)``
  and ``score(prompts (n,), responses (n, 1))``, the interface the training study uses.
  A bandit is the ``response_len == 1`` case of a text task, so the sequence policies
  in ``toy_envs.policies`` run on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

REWARD_MODES = ("binary", "graded")


def check_int(name: str, value, low: int, high: int | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int in ``[low, high]``."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        accepted = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name} must be {accepted}, got {value!r}")


def check_choice(name: str, value, accepted) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not accepted; accepted values: {list(accepted)}")


@dataclass(frozen=True)
class BanditConfig:
    """Size and reward of a contextual bandit."""

    n_contexts: int = 16
    """Number of distinct prompts (context ids)."""
    n_actions: int = 8
    """Number of actions (the response vocabulary)."""
    reward: str = "binary"
    """"binary" (1 at the target action) or "graded" (partial credit elsewhere)."""
    seed: int = 0
    """Seed of the reward table; the same seed gives the same task."""

    def __post_init__(self) -> None:
        check_int("n_contexts", self.n_contexts, 1)
        check_int("n_actions", self.n_actions, 2)
        check_choice("reward", self.reward, REWARD_MODES)
        check_int("seed", self.seed, 0)


class BanditTask:
    """Batch path of the bandit: tensors in, tensors out, no gymnasium.

    Attributes: ``target`` (C,) long, ``table`` (C, A) float reward of every action.
    ``n_prompts``, ``response_len`` (= 1) and ``vocab_size`` (= n_actions) give the shape
    interface shared with ``ForkingTextTask``.
    """

    def __init__(self, cfg: BanditConfig) -> None:
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        C, A = cfg.n_contexts, cfg.n_actions
        self.target = torch.randint(A, (C,), generator=g)  # (C,)
        if cfg.reward == "graded":
            table = 0.9 * torch.rand(C, A, generator=g)  # (C, A)
        else:
            table = torch.zeros(C, A)  # (C, A)
        self.table = table.scatter(1, self.target[:, None], 1.0)  # (C, A)
        self.n_prompts, self.response_len, self.vocab_size = C, 1, A

    def sample_prompts(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` context ids drawn uniformly with ``generator``. (n,) long."""
        return torch.randint(self.n_prompts, (n,), generator=generator)

    def score(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Reward of each (prompt, response) pair.

        prompts (n,) long, responses (n, 1) long (or (n,)) -> rewards (n,) float.
        """
        actions = responses.reshape(prompts.shape[0], -1)[:, 0]  # (n,)
        return self.table[prompts, actions]  # (n,)


class ContextualBandit(gym.Env):
    """Gymnasium view of ``BanditTask``: observe a context id, act once, get the reward.

    ``reset(seed=..., options={"prompt": c})`` fixes the context; otherwise it is drawn
    with the env's ``np_random``. The episode terminates after the single step.
    """

    metadata = {"render_modes": []}

    def __init__(self, **kwargs) -> None:
        self.cfg = BanditConfig(**kwargs)
        self.task = BanditTask(self.cfg)
        self.observation_space = gym.spaces.Discrete(self.cfg.n_contexts)
        self.action_space = gym.spaces.Discrete(self.cfg.n_actions)
        self._context = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "prompt" in options:
            check_int("options['prompt']", options["prompt"], 0, self.cfg.n_contexts - 1)
            self._context = int(options["prompt"])
        else:
            self._context = int(self.np_random.integers(self.cfg.n_contexts))
        return np.int64(self._context), {}

    def step(self, action):
        reward = float(self.task.table[self._context, int(action)])
        info = {"target": int(self.task.target[self._context])}
        return np.int64(self._context), reward, True, False, info
