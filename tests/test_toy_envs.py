"""Toy envs and batched policies: gymnasium API, batch == step, determinism, run independence."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import toy_envs
from toy_envs import BanditConfig, BanditTask, ContextualBandit, ForkingTextConfig, ForkingTextEnv, ForkingTextTask
from toy_envs import policies as pol



@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: intra-op threads only add overhead (up to 50x on a busy 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- gymnasium API


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("toy_envs/ContextualBandit-v0", {}),
        ("toy_envs/ContextualBandit-v0", {"reward": "graded", "n_contexts": 3, "n_actions": 2}),
        ("toy_envs/ForkingText-v0", {}),
        ("toy_envs/ForkingText-v0", {"reward": "binary", "chained": True, "fork_positions": (0, 1, 2)}),
    ],
)
def test_check_env_passes(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.unwrapped.task is not None


def test_registration_is_on_import():
    assert "toy_envs/ContextualBandit-v0" in gym.registry
    assert "toy_envs/ForkingText-v0" in gym.registry
    assert toy_envs.ForkingTextEnv is ForkingTextEnv


def _step_reward(env: ForkingTextEnv, prompt: int, response: list[int]) -> float:
    obs, _ = env.reset(seed=0, options={"prompt": prompt})
    total = 0.0
    for t, tok in enumerate(response):
        assert int(obs["position"]) == t and int(obs["prompt"]) == prompt
        assert int(obs["prev_token"]) == (response[t - 1] if t else env.cfg.vocab_size)
        obs, r, terminated, truncated, _ = env.step(tok)
        total += r
        assert terminated == (t == len(response) - 1) and not truncated
    return total


# ---------------------------------------------------------------- batch path == step path


@settings(max_examples=25, deadline=None)
@given(
    n_prompts=st.integers(1, 6),
    length=st.integers(1, 6),
    vocab=st.integers(2, 4),
    forks_frac=st.floats(0, 1),
    reward=st.sampled_from(["graded", "binary", "partial"]),
    chained=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_forking_batch_score_equals_step_rewards(n_prompts, length, vocab, forks_frac, reward, chained, seed):
    n_forks = 1 + int(forks_frac * (length - 1))
    env = ForkingTextEnv(n_prompts=n_prompts, length=length, vocab_size=vocab, n_forks=n_forks,
                         reward=reward, chained=chained, seed=seed)
    g = torch.Generator().manual_seed(seed)
    prompts = env.task.sample_prompts(8, g)  # (8,)
    responses = torch.randint(vocab, (8, length), generator=g)  # (8, L)
    # half the cases: the right answer, so the reward is not always 0
    right = torch.where(env.task.is_fork, responses, env.task.fixed_target[prompts])  # (8, L)
    responses[:4] = right[:4]
    batch = env.task.score(prompts, responses)  # (8,)
    step = [_step_reward(env, int(p), r.tolist()) for p, r in zip(prompts, responses)]
    assert batch.tolist() == pytest.approx(step)


@settings(max_examples=15, deadline=None)
@given(n_contexts=st.integers(1, 8), n_actions=st.integers(2, 6), reward=st.sampled_from(["graded", "binary"]),
       seed=st.integers(0, 1000))
def test_bandit_batch_score_equals_step_rewards(n_contexts, n_actions, reward, seed):
    env = ContextualBandit(n_contexts=n_contexts, n_actions=n_actions, reward=reward, seed=seed)
    g = torch.Generator().manual_seed(seed)
    prompts = env.task.sample_prompts(10, g)  # (10,)
    actions = torch.randint(n_actions, (10, 1), generator=g)  # (10, 1)
    batch = env.task.score(prompts, actions)  # (10,)
    for p, a, r in zip(prompts, actions, batch):
        obs, _ = env.reset(options={"prompt": int(p)})
        assert int(obs) == int(p)
        _, r_step, terminated, _, info = env.step(int(a))
        assert terminated and r_step == pytest.approx(float(r))
        assert (r_step == 1.0) == (int(a) == info["target"])


def test_forking_score_hand_computed():
    task = ForkingTextTask(ForkingTextConfig(n_prompts=1, length=4, vocab_size=5, fork_positions=(1, 2), n_forks=2,
                                             chained=True, reward="graded"))
    fixed, base = task.fixed_target[0], task.fork_base[0]
    a1 = (int(base[0]) + int(fixed[0])) % 5  # fork 1 after fixed token 0
    a2 = (int(base[1]) + a1) % 5  # fork 2 depends on the fork-1 choice
    good = torch.tensor([[int(fixed[0]), a1, a2, int(fixed[3])]])  # (1, L)
    p = torch.zeros(1, dtype=torch.long)
    assert task.score(p, good).item() == 1.0
    half = good.clone()
    half[0, 2] = (a2 + 1) % 5
    assert task.score(p, half).item() == 0.5
    bad_fixed = good.clone()
    bad_fixed[0, 3] = (int(fixed[3]) + 1) % 5
    assert task.score(p, bad_fixed).item() == 0.0
    binary = ForkingTextTask(ForkingTextConfig(n_prompts=1, length=4, vocab_size=5, fork_positions=(1, 2), n_forks=2,
                                               chained=True, reward="binary"))
    assert binary.score(p, good).item() == 1.0 and binary.score(p, half).item() == 0.0
    partial = ForkingTextTask(ForkingTextConfig(n_prompts=1, length=4, vocab_size=5, fork_positions=(1, 2), n_forks=2,
                                                chained=True, reward="partial"))
    assert partial.score(p, good).item() == 1.0 and partial.score(p, half).item() == 0.0  # every fork must be right
    assert partial.score(p, bad_fixed).item() == pytest.approx(0.5**4)  # 1 of 2 fixed positions right


# ---------------------------------------------------------------- determinism and config checks


def test_same_seed_same_task_and_episodes():
    a, b, c = (ForkingTextTask(ForkingTextConfig(seed=s)) for s in (3, 3, 4))
    assert torch.equal(a.fixed_target, b.fixed_target) and torch.equal(a.fork_positions, b.fork_positions)
    assert not torch.equal(a.fixed_target, c.fixed_target)
    env1, env2 = ForkingTextEnv(), ForkingTextEnv()
    assert [env1.reset(seed=11)[0]["prompt"] for _ in range(3)] == [env2.reset(seed=11)[0]["prompt"] for _ in range(3)]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(a.sample_prompts(20, g1), a.sample_prompts(20, g2))


def test_same_seed_same_samples():
    task = ForkingTextTask(ForkingTextConfig())
    cfg = pol.PolicyConfig.for_task(task)
    runs = [pol.init_params(2, cfg, torch.Generator().manual_seed(0)) for _ in range(2)]
    prompts = task.sample_prompts(2 * 16, torch.Generator().manual_seed(1)).reshape(2, 16)  # (R, N)
    out = [pol.sample(p, prompts, torch.Generator().manual_seed(2)) for p in runs]
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    other = pol.sample(runs[0], prompts, torch.Generator().manual_seed(3))[0]
    assert not torch.equal(out[0][0], other)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_forks": 13}, r"n_forks must be an integer in \[1, 12\]"),
        ({"n_forks": 0}, r"n_forks must be an integer in \[1, 12\]"),
        ({"vocab_size": 1}, r"vocab_size must be an integer >= 2"),
        ({"length": 0}, r"length must be an integer >= 1"),
        ({"reward": "dense"}, r"reward='dense' is not accepted; accepted values: \['binary', 'graded', 'partial'\]"),
        ({"fork_positions": (1, 1, 2)}, r"fork_positions must be \(\) or 3 \(n_forks\) distinct integers"),
        ({"fork_positions": (1, 2, 12)}, r"fork_positions must be .* in \[0, 12\)"),
    ],
)
def test_bad_forking_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForkingTextEnv(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_actions": 1}, r"n_actions must be an integer >= 2"), ({"n_contexts": 0}, r"n_contexts must be"),
     ({"reward": "x"}, r"accepted values")],
)
def test_bad_bandit_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BanditConfig(**kwargs)


# ---------------------------------------------------------------- policies


def test_sampled_logp_equals_teacher_forced_and_shapes():
    task = ForkingTextTask(ForkingTextConfig(n_prompts=8, length=5, vocab_size=6))
    params = pol.init_params(3, pol.PolicyConfig.for_task(task, hidden=16), torch.Generator().manual_seed(0))
    prompts = torch.randint(8, (3, 7), generator=torch.Generator().manual_seed(1))  # (R, N)
    responses, logp = pol.sample(params, prompts, torch.Generator().manual_seed(2), temperature=0.7)
    assert responses.shape == logp.shape == (3, 7, 5) and not logp.requires_grad
    lp, ent = pol.token_logp_and_entropy(params, prompts, responses, temperature=0.7)
    torch.testing.assert_close(lp.detach(), logp, atol=1e-6, rtol=0)  # on-policy log_ratio ~ 0
    assert pol.logits(params, prompts, responses).shape == (3, 7, 5, 6)
    assert bool((ent >= 0).all()) and bool((ent <= math.log(6) + 1e-5).all())
    lp.sum().backward()
    assert all(p.grad is not None and p.is_leaf for p in params.values())


def test_sampler_matches_policy_probabilities():
    task = BanditTask(BanditConfig(n_contexts=2, n_actions=5))
    cfg = pol.PolicyConfig.for_task(task, hidden=8, head_std=1.0)
    params = pol.init_params(1, cfg, torch.Generator().manual_seed(0))
    prompts = torch.zeros(1, 40_000, dtype=torch.long)  # (R, N)
    actions, _ = pol.sample(params, prompts, torch.Generator().manual_seed(1))  # (1, N, 1)
    freq = torch.bincount(actions.flatten(), minlength=5).float() / prompts.numel()  # (A,)
    probs = torch.softmax(pol.bandit_logits(params, prompts[:, :1]), -1)[0, 0].detach()  # (A,)
    assert torch.allclose(freq, probs, atol=0.01)


def test_batched_runs_equal_single_runs():
    """Run r of an R-run batch (per-run generators) == the same run done alone, incl. Adam warm start."""
    task = ForkingTextTask(ForkingTextConfig(n_prompts=16))
    cfg = pol.PolicyConfig.for_task(task, hidden=32)
    seeds = [10, 11, 12]
    batch = pol.init_params(3, cfg, pol.run_generators(seeds))
    alone = pol.init_params(1, cfg, pol.run_generators(seeds[1:2]))
    assert all(torch.equal(batch[k][1], alone[k][0]) for k in pol.PARAM_NAMES)
    pol.supervised_warm_start(batch, task, steps=20, lr=1e-2, generator=pol.run_generators([0, 1, 2]))
    pol.supervised_warm_start(alone, task, steps=20, lr=1e-2, generator=pol.run_generators([1]))
    for k in pol.PARAM_NAMES:
        torch.testing.assert_close(batch[k][1], alone[k][0], rtol=1e-5, atol=1e-6)
    prompts = task.sample_prompts(24, torch.Generator().manual_seed(3)).reshape(3, 8)  # (R, N)
    rb, lb = pol.sample(batch, prompts, pol.run_generators([7, 8, 9]))
    ra, la = pol.sample(alone, prompts[1:2], pol.run_generators([8]))
    assert torch.equal(rb[1], ra[0])
    torch.testing.assert_close(lb[1], la[0], rtol=1e-5, atol=1e-6)


def test_warm_start_gives_llm_like_entropies():
    """Fixed positions near-deterministic, forks near-uniform (ln 8 = 2.08 nats)."""
    task = ForkingTextTask(ForkingTextConfig())  # 64 prompts, L=12, V=8, 3 forks
    params = pol.init_params(2, pol.PolicyConfig.for_task(task), pol.run_generators([0, 1]))
    pol.supervised_warm_start(params, task, steps=300, lr=1e-2, generator=pol.run_generators([2, 3]))
    prompts = torch.arange(64).expand(2, 64)  # (R, N)
    responses, _ = pol.sample(params, prompts, pol.run_generators([4, 5]))
    ent = pol.entropy(params, prompts, responses).detach()  # (R, N, L)
    fixed_ent = ent[..., ~task.is_fork].mean(dim=(1, 2))  # (R,)
    fork_ent = ent[..., task.is_fork].mean(dim=(1, 2))  # (R,)
    assert bool((fixed_ent < 0.15).all()), fixed_ent
    assert bool((fork_ent > 1.9).all()), fork_ent
    reward = task.score(prompts.reshape(-1), responses.reshape(-1, 12)).mean()
    assert 0.05 < float(reward) < 0.3  # forks unsolved: about (1/8) x P(all fixed right)


def test_single_run_policy_acts_in_both_envs():
    gen = torch.Generator().manual_seed(0)
    for env in (ForkingTextEnv(n_prompts=4, length=5), ContextualBandit()):
        policy = pol.Policy(pol.PolicyConfig.for_task(env.task, hidden=16), seed=1)
        obs, _ = env.reset(seed=0)
        done = False
        while not done:
            obs, _, done, _, _ = env.step(policy.act(obs, gen))
        responses, logp = policy.sample(torch.tensor([0, 1]), gen)
        assert responses.shape == logp.shape == (2, env.task.response_len)
