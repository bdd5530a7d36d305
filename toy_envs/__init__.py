"""Toy tasks with verifiable rewards for studying RL on LLMs with stale rollouts.

Two tasks, each with a gymnasium step API and a vectorized batch path on torch tensors:

- ``ContextualBandit`` / ``BanditTask``: prompt -> one action -> reward.
- ``ForkingTextEnv`` / ``ForkingTextTask``: prompt -> L-token response whose token
  statistics look like an LLM's (mostly near-deterministic tokens, a few high-entropy
  "forking" tokens that decide the reward).

Both task objects share one duck-typed interface used by ``toy_envs.policies`` and the
training study: ``n_prompts``, ``response_len`` (L), ``vocab_size`` (V),
``sample_prompts(n, generator) -> (n,) long`` and
``score(prompts (n,), responses (n, L)) -> (n,) float``. An env's task is ``env.task``
(``env.unwrapped.task`` after ``gymnasium.make``).

Importing this package registers ``toy_envs/ContextualBandit-v0`` and
``toy_envs/ForkingText-v0``; keyword arguments of ``gymnasium.make`` go to the config.
"""

from __future__ import annotations

import gymnasium as gym

from .bandit import BanditConfig, BanditTask, ContextualBandit
from .forking_text import ForkingTextConfig, ForkingTextEnv, ForkingTextTask

__all__ = [
    "BanditConfig",
    "BanditTask",
    "ContextualBandit",
    "ForkingTextConfig",
    "ForkingTextEnv",
    "ForkingTextTask",
]

for _env_id, _entry in (
    ("toy_envs/ContextualBandit-v0", "toy_envs.bandit:ContextualBandit"),
    ("toy_envs/ForkingText-v0", "toy_envs.forking_text:ForkingTextEnv"),
):
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry)
