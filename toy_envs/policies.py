"""Tiny autoregressive policies with a leading run dimension R, for many runs at once.

The policy is one MLP with shared weights (not a lookup table), so an update for one
prompt moves the others, as in a network:

    x = prompt_emb[p] + pos_emb[t] + tok_emb[prev]          # (H,)
    logits = W2 tanh(W1 x + b1) + b2                        # (V,)

``prev`` is the previous token of the response, ``BOS = V`` at position 0. Every
parameter carries a leading run dimension R (batched weights, ``torch.baddbmm``), so R
independent runs -- methods x staleness x seeds of a study -- train in one call.

Runs stay independent under one optimizer: make the loss a *sum* over runs of per-run
losses; then run r's gradient is exactly its own, and Adam's update is per element, so
``torch.optim.Adam(params.values())`` over all runs equals R separate Adams.

Randomness: every ``generator`` argument takes either one ``torch.Generator`` (draws for
all runs at once) or a sequence of R generators, one per run (see ``run_generators``).
With per-run generators run r's numbers do not depend on the other runs, so a batch of
runs reproduces the same runs done one at a time (a test says so).

Speed: the tensors are tiny, so call ``torch.set_num_threads(1)`` (measured: 2 intra-op
threads on a busy 2-core CPU are 2-50x slower); R = 45 runs x 256 responses x L = 12
take about 0.35 s per ``sample`` and 0.35 s per forward+backward+Adam on one thread.

A bandit is the ``response_len == 1`` case: ``bandit_logits`` is the policy at
position 0 after BOS, an MLP over the context embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

Gen = Union[torch.Generator, Sequence[torch.Generator]]
PARAM_NAMES = ("prompt_emb", "pos_emb", "tok_emb", "w1", "b1", "w2", "b2")


@dataclass(frozen=True)
class PolicyConfig:
    """Shape and initial scale of the policy MLP."""

    n_prompts: int
    """Number of prompt ids P (rows of the prompt embedding)."""
    response_len: int
    """Response length L (rows of the position embedding)."""
    vocab_size: int
    """Vocabulary size V (logits per token); the token embedding has V + 1 rows (BOS = V)."""
    hidden: int = 64
    """Width H of the embeddings and the hidden layer."""
    emb_std: float = 0.5
    """Initial std of the embeddings."""
    head_std: float = 0.01
    """Initial std of the output layer W2 (small: the initial policy is near uniform)."""

    @classmethod
    def for_task(cls, task, **kwargs) -> "PolicyConfig":
        """Config sized for ``task`` (anything with n_prompts, response_len, vocab_size)."""
        return cls(task.n_prompts, task.response_len, task.vocab_size, **kwargs)


def run_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per run."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def _draw(generator: Gen, R: int, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    """Random tensor (R, *shape): ``kind`` is "randn" or "rand"."""
    fn = torch.randn if kind == "randn" else torch.rand
    if isinstance(generator, torch.Generator):
        return fn((R, *shape), generator=generator)
    if len(generator) != R:
        raise ValueError(f"generator must be one torch.Generator or R={R} generators, got {len(generator)}")
    return torch.stack([fn(shape, generator=g) for g in generator])


def init_params(R: int, cfg: PolicyConfig, generator: Gen) -> dict[str, torch.Tensor]:
    """Fresh parameters for R runs: leaf tensors with ``requires_grad=True``.

    Shapes: prompt_emb (R, P, H), pos_emb (R, L, H), tok_emb (R, V+1, H),
    w1 (R, H, H), b1 (R, 1, H), w2 (R, H, V), b2 (R, 1, V).
    """
    P, L, V, H = cfg.n_prompts, cfg.response_len, cfg.vocab_size, cfg.hidden
    shapes = {
        "prompt_emb": ((P, H), cfg.emb_std),
        "pos_emb": ((L, H), cfg.emb_std),
        "tok_emb": ((V + 1, H), cfg.emb_std),
        "w1": ((H, H), H**-0.5),
        "b1": ((1, H), 0.0),
        "w2": ((H, V), cfg.head_std),
        "b2": ((1, V), 0.0),
    }
    params = {}
    for name in PARAM_NAMES:
        shape, std = shapes[name]
        params[name] = (std * _draw(generator, R, shape, "randn")).requires_grad_(True)
    return params


def _take(emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-run embedding lookup: emb (R, K, H), idx (R, ...) long -> (R, ..., H).

    One row gather on the flattened (R * K, H) table (``index_select`` copies whole rows:
    several times faster than an element-wise ``gather`` over H).
    """
    R, K, H = emb.shape
    rows = (idx.reshape(R, -1) + K * torch.arange(R, device=idx.device)[:, None]).reshape(-1)  # (R * M,)
    return emb.reshape(R * K, H).index_select(0, rows).reshape(*idx.shape, H)  # (R, ..., H)


def _mlp(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Batched MLP head: x (R, ..., H) -> logits (R, ..., V)."""
    R, H = x.shape[0], x.shape[-1]
    h = torch.tanh(torch.baddbmm(params["b1"], x.reshape(R, -1, H), params["w1"]))  # (R, M, H)
    out = torch.baddbmm(params["b2"], h, params["w2"])  # (R, M, V)
    return out.reshape(*x.shape[:-1], out.shape[-1])  # (R, ..., V)


def step_logits(params, prompts, positions, prev_tokens) -> torch.Tensor:
    """Logits of the next token. prompts, positions, prev_tokens (R, N) long -> (R, N, V)."""
    x = (
        _take(params["prompt_emb"], prompts)
        + _take(params["pos_emb"], positions)
        + _take(params["tok_emb"], prev_tokens)
    )  # (R, N, H)
    return _mlp(params, x)  # (R, N, V)


def logits(params, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits of a whole response in one call.

    prompts (R, N) long, responses (R, N, L) long -> logits (R, N, L, V); position t
    sees the prompt, t and token t-1 (BOS = V at t = 0).
    """
    R, N, L = responses.shape
    V = params["w2"].shape[-1]
    bos = torch.full_like(responses[..., :1], V)  # (R, N, 1)
    prev = torch.cat([bos, responses[..., :-1]], dim=-1)  # (R, N, L)
    x = (
        _take(params["prompt_emb"], prompts)[:, :, None]  # (R, N, 1, H)
        + params["pos_emb"][:, None, :L]  # (R, 1, L, H)
        + _take(params["tok_emb"], prev)  # (R, N, L, H)
    )
    return _mlp(params, x)  # (R, N, L, V)


def token_logp_and_entropy(params, prompts, responses, temperature: float = 1.0):
    """Log-prob of each response token and the entropy of its distribution.

    prompts (R, N), responses (R, N, L) -> (logp (R, N, L), entropy (R, N, L)), both under
    ``softmax(logits / temperature)``, differentiable in ``params``.
    """
    logp_all = torch.log_softmax(logits(params, prompts, responses) / temperature, dim=-1)  # (R, N, L, V)
    logp = logp_all.gather(-1, responses[..., None]).squeeze(-1)  # (R, N, L)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (R, N, L)
    return logp, entropy


def token_logp(params, prompts, responses, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of each response token. (R, N), (R, N, L) -> (R, N, L)."""
    return token_logp_and_entropy(params, prompts, responses, temperature)[0]


def entropy(params, prompts, responses, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the next-token distribution at each position. (R, N), (R, N, L) -> (R, N, L)."""
    return token_logp_and_entropy(params, prompts, responses, temperature)[1]


@torch.no_grad()
def sample(params, prompts: torch.Tensor, generator: Gen, temperature: float = 1.0, with_entropy: bool = False):
    """Sample responses autoregressively (inverse-CDF with uniforms drawn up front).

    prompts (R, N) long -> (responses (R, N, L) long, logp (R, N, L) float), L the
    policy's ``response_len``. Per-run generators draw (N, L) uniforms each.
    ``logp`` is the behaviour log-prob (detached), read from the same log-softmax the
    token was drawn from; it equals the teacher-forced ``token_logp`` up to float
    rounding (~1e-7), so on-policy ``logp - old_logp`` is 0 to that precision.
    ``with_entropy=True`` also returns the entropy of each sampled position's
    distribution, (R, N, L) (read from the same log-softmax: no second forward pass).
    """
    R, N = prompts.shape
    length, V = params["pos_emb"].shape[1], params["w2"].shape[-1]
    u = _draw(generator, R, (N, length), "rand").permute(2, 0, 1).unsqueeze(-1).contiguous()  # (L, R, N, 1)
    prev = torch.full_like(prompts, V)  # (R, N)
    prompt_x = _take(params["prompt_emb"], prompts)  # (R, N, H), the same at every position
    tokens, logps, ents = [], [], []
    for t in range(length):
        x = prompt_x + params["pos_emb"][:, t, None] + _take(params["tok_emb"], prev)  # (R, N, H)
        logp_v = torch.log_softmax(_mlp(params, x) / temperature, dim=-1)  # (R, N, V)
        p_v = logp_v.exp()  # (R, N, V)
        cdf = p_v.cumsum(-1)  # (R, N, V)
        prev = torch.searchsorted(cdf, u[t], right=True).squeeze(-1).clamp_(max=V - 1)  # (R, N)
        tokens.append(prev)
        logps.append(logp_v.gather(-1, prev[..., None]).squeeze(-1))  # (R, N)
        if with_entropy:
            ents.append(-(p_v * logp_v).sum(-1))  # (R, N)
    out = torch.stack(tokens, dim=-1), torch.stack(logps, dim=-1)  # (R, N, L), (R, N, L)
    return (*out, torch.stack(ents, dim=-1)) if with_entropy else out


def bandit_logits(params, contexts: torch.Tensor) -> torch.Tensor:
    """Action logits of a bandit policy (the L = 1 case). contexts (R, N) -> (R, N, A)."""
    zeros = torch.zeros_like(contexts)  # (R, N)
    bos = torch.full_like(contexts, params["w2"].shape[-1])  # (R, N)
    return step_logits(params, contexts, zeros, bos)  # (R, N, A)


def supervised_warm_start(params, task, steps: int, lr: float, generator: Gen,
                          fork_uniform_weight: float = 1.0, fork_prior: float = 0.0) -> torch.Tensor:
    """Teach the fixed positions of a ``ForkingTextTask`` by cross-entropy (in place).

    Each step feeds every prompt teacher-forced with its fixed targets, fork positions
    filled with uniformly random tokens (so fixed positions learn to ignore the fork
    choice), and minimises the cross-entropy at fixed positions plus
    ``fork_uniform_weight`` x the cross-entropy toward uniform at fork positions. The
    policy ends near-deterministic on fixed positions while forks stay high-entropy: the
    LLM-like statistics of PROBES.md probe B (300 steps at lr 1e-2: about 0.03 nats at
    fixed positions, 2.08 = ln 8 at forks). With ``fork_uniform_weight=0`` (fixed
    positions only) the shared weights leak prompt-specific preferences into the forks,
    which fall to about 0.5 nats. ``fork_prior = q`` moves the fork target from uniform
    to ``q * onehot(correct) + (1 - q) * uniform`` (the correct token of an unchained
    task, ``fork_base``): an SFT model that already sometimes succeeds, which RL then
    sharpens -- the usual starting point of RL on LLMs. Loss = sum over runs (runs stay
    independent).

    Returns the last step's per-run loss, (R,) detached.
    """
    R, P, L, V = params["w2"].shape[0], task.n_prompts, task.response_len, task.vocab_size
    prompts = torch.arange(P).expand(R, P)  # (R, P)
    is_fork = task.is_fork  # (L,)
    opt = torch.optim.Adam(params.values(), lr=lr)
    for _ in range(steps):
        fillers = (_draw(generator, R, (P, L), "rand") * V).long().clamp_(max=V - 1)  # (R, P, L)
        responses = torch.where(is_fork, fillers, task.fixed_target.expand(R, P, L))  # (R, P, L)
        logp_all = torch.log_softmax(logits(params, prompts, responses), dim=-1)  # (R, P, L, V)
        nll = -logp_all.gather(-1, responses[..., None]).squeeze(-1)  # (R, P, L)
        fixed = (~is_fork).float()  # (L,)
        loss = (nll * fixed).sum(dim=(1, 2)) / (P * fixed.sum()).clamp(min=1)  # (R,)
        if fork_uniform_weight > 0:
            fork_logp = logp_all[:, :, is_fork]  # (R, P, F, V)
            target = torch.full((P, int(is_fork.sum()), V), (1 - fork_prior) / V)  # (P, F, V)
            if fork_prior > 0:
                target.scatter_add_(-1, task.fork_base[..., None], torch.full((P, target.shape[1], 1), fork_prior))
            ce = -(target * fork_logp).sum(-1).mean(dim=(1, 2))  # (R,)
            loss = loss + fork_uniform_weight * ce
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    return loss.detach()


class Policy:
    """Non-batched convenience view (R = 1): same functions, no run dimension.

    ``params`` keeps the leading R = 1 so it plugs into the batched functions.
    """

    def __init__(self, cfg: PolicyConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.params = init_params(1, cfg, run_generators([seed]))

    def sample(self, prompts: torch.Tensor, generator: torch.Generator, temperature: float = 1.0):
        """prompts (N,) -> (responses (N, L), logp (N, L))."""
        responses, logp = sample(self.params, prompts[None], [generator], temperature)
        return responses[0], logp[0]

    def token_logp_and_entropy(self, prompts: torch.Tensor, responses: torch.Tensor, temperature: float = 1.0):
        """prompts (N,), responses (N, L) -> (logp (N, L), entropy (N, L))."""
        logp, ent = token_logp_and_entropy(self.params, prompts[None], responses[None], temperature)
        return logp[0], ent[0]

    @torch.no_grad()
    def act(self, obs, generator: torch.Generator, temperature: float = 1.0) -> int:
        """One action for a gymnasium observation (bandit int or forking-text dict)."""
        if isinstance(obs, dict):
            p, t, prev = int(obs["prompt"]), int(obs["position"]), int(obs["prev_token"])
        else:
            p, t, prev = int(obs), 0, self.cfg.vocab_size
        z = step_logits(self.params, *(torch.tensor([[v]]) for v in (p, t, prev)))[0, 0]  # (V,)
        return int(torch.multinomial(torch.softmax(z / temperature, -1), 1, generator=generator))
