"""Rollouts for the LLM trainer: tasks, prompt encoding, sampling, behaviour log-probs.

A rollout batch is a dict of CPU tensors -- what :class:`m2po_lab.staleness.StaleQueue`
stores for k updates (never a model copy):

- ``input_ids`` (N, P + R) int32: left-padded prompt then response (pad after EOS);
- ``attention_mask`` (N, P + R) bool: real prompt tokens and the response up to EOS;
- ``mask`` (N, R) bool: valid response tokens (up to and including the first EOS);
- ``old_logp`` (N, R) float32: log pi_behav of the sampled tokens, recomputed with
  :func:`token_logprobs` by the model that sampled them (not ``generate``'s scores);
- ``reward`` (N,), ``adv`` (N,) float32: outcome reward and group advantage;
- ``response_start``: P. N = prompts x G, the G responses of a prompt contiguous.
"""

from __future__ import annotations

from pathlib import Path

import torch

from m2po_lab.advantages import group_advantages

from .models import generate, position_ids_from_mask, token_logprobs
from .tasks import GSM8K_KEYS, MATH_KEYS, ArithmeticTask, JsonlTask, get_reward, load_jsonl_task

_INSTRUCTIONS = {
    "gsm8k": "\nSolve step by step and give the final answer after '####'.",
    "math": "\nSolve step by step and put the final answer in \\boxed{}.",
    "jsonl": "",
}
_KEYS = {"gsm8k": GSM8K_KEYS, "math": MATH_KEYS, "jsonl": dict(question_key="question", answer_key="answer")}


def load_tasks(cfg, progress: bool = False) -> tuple[object, list[tuple[str, str]]]:
    """(train task with ``sample(n, generator)``, held-out [(prompt, answer)]) for ``cfg.task``.

    arith: fresh draws; the held-out set is drawn with seed + 1 (the SFT report's set).
    ``cfg.dataset``: ``cfg.split`` through ``datasets.load_dataset`` (:mod:`.data`), held out
    ``cfg.eval_split``; ``cfg.data``: a JSONL file, held out ``cfg.eval_data``. Without a
    held-out set the last ``eval_prompts`` records are held out and never trained on.
    """
    if cfg.task == "arith":
        task = ArithmeticTask(n_digits=cfg.n_digits, seed=cfg.seed, little_endian=cfg.little_endian,
                              fixed_width=cfg.fixed_width)
        return task, task.sample(cfg.eval_prompts, torch.Generator().manual_seed(cfg.seed + 1))
    template = "{question}" + _INSTRUCTIONS[cfg.task]
    if getattr(cfg, "dataset", None) is not None:
        from .data import load_dataset_task

        kw = dict(config=cfg.dataset_config, question_field=cfg.question_field, answer_field=cfg.answer_field,
                  prompt_template=template, seed=cfg.seed, progress=progress)
        train = load_dataset_task(cfg.dataset, cfg.task, split=cfg.split, **kw)
        held = load_dataset_task(cfg.dataset, cfg.task, split=cfg.eval_split, **kw).items if cfg.eval_split else None
    else:
        kw = dict(prompt_template=template, seed=cfg.seed, **_KEYS[cfg.task])
        for name in ("data", "eval_data"):
            path = getattr(cfg, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path!r}")
        try:
            train = load_jsonl_task(cfg.data, **kw)
            held = load_jsonl_task(cfg.eval_data, **kw).items if cfg.eval_data else None
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"data: {err}") from err
    if held is None:
        if len(train) <= cfg.eval_prompts:
            what = "dataset" if getattr(cfg, "dataset", None) is not None else "data"
            raise ValueError(f"{what}: {len(train)} records cannot hold out eval_prompts={cfg.eval_prompts}")
        held = train.items[-cfg.eval_prompts:]
        train = JsonlTask(items=train.items[: -cfg.eval_prompts], seed=cfg.seed)
    return train, list(held[: cfg.eval_prompts])


def uses_chat_template(tokenizer, task: str, chat_template: bool = True) -> bool:
    """Whether prompts go through the tokenizer's chat template: real tasks, a tokenizer with one, not turned off."""
    return bool(chat_template) and task != "arith" and bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, prompt: str, task: str, chat_template: bool = True) -> str:
    """The text the model sees: the chat template (see :func:`uses_chat_template`) or the raw prompt."""
    if uses_chat_template(tokenizer, task, chat_template):
        msgs = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return prompt


def encode_prompts(tokenizer, prompts: list[str], task: str, context: int, max_new_tokens: int,
                   chat_template: bool = True):
    """Left-padded (input_ids (B, P), attention_mask (B, P)); ValueError if a prompt cannot fit.

    A templated prompt already holds the template's special tokens: none are added again.
    """
    texts = [format_prompt(tokenizer, p, task, chat_template) for p in prompts]
    special = not uses_chat_template(tokenizer, task, chat_template)
    enc = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=special)
    longest = int(enc["attention_mask"].sum(-1).max())
    if longest + max_new_tokens > context:
        raise ValueError(f"data: a prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the "
                         f"model context of {context} tokens; shorten the prompts or lower --max-new-tokens")
    return enc["input_ids"], enc["attention_mask"]


def model_context(model) -> int:
    """Longest sequence the model accepts (its RoPE table / max_position_embeddings)."""
    return int(getattr(model.config, "max_position_embeddings", 2**31 - 1))


def logp_and_entropy(model, input_ids, attention_mask, response_start: int, temperature: float = 1.0):
    """(logp (B, R) with gradient, entropy (B, R) detached) of the response tokens.

    The same computation as :func:`token_logprobs` (a test checks the two agree), plus
    the token entropy ``H_t = logsumexp(z) - sum softmax(z) z`` of the current policy.
    """
    n_resp = input_ids.shape[1] - response_start  # R
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=False,
                logits_to_keep=n_resp + 1)
    logits = out.logits[:, :-1].float() / temperature  # (B, R, V)
    targets = input_ids[:, response_start:]  # (B, R)
    lse = torch.logsumexp(logits, dim=-1)  # (B, R)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse  # (B, R)
    with torch.no_grad():
        z = logits.detach()
        entropy = lse.detach() - (torch.softmax(z, -1) * z).sum(-1)  # (B, R)
    return logp, entropy


@torch.no_grad()
def rollout(model, tokenizer, task, cfg, generator: torch.Generator, autocast) -> dict:
    """Sample prompts_per_step prompts x G responses with the current policy; score them.

    Prompts and the sampling seed both come from ``generator`` (seeded per step by the
    trainer), so a resumed run draws the same rollouts. Returns the CPU batch above.
    """
    device = next(model.parameters()).device
    pairs = task.sample(cfg.prompts_per_step, generator)
    prompts = [p for p, _ in pairs for _ in range(cfg.group_size)]  # G contiguous copies
    answers = [a for _, a in pairs for _ in range(cfg.group_size)]
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, cfg.task, model_context(model), cfg.max_new_tokens,
                                             getattr(cfg, "chat_template", True))
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)  # (N, P)
    was_training = model.training
    model.eval()
    with autocast():
        response_ids, mask = generate(model, tokenizer, prompt_ids, prompt_mask, cfg.max_new_tokens,
                                      temperature=cfg.temperature, generator=generator)  # (N, R)
    input_ids = torch.cat([prompt_ids, response_ids], 1)  # (N, P + R)
    attention_mask = torch.cat([prompt_mask.bool(), mask], 1)  # (N, P + R)
    P = prompt_ids.shape[1]
    old_logp = torch.zeros(mask.shape, dtype=torch.float32, device=device)  # (N, R)
    for i in range(0, len(prompts), cfg.micro_batch_size):
        rows = slice(i, i + cfg.micro_batch_size)
        with autocast():
            old_logp[rows] = token_logprobs(model, input_ids[rows], attention_mask[rows].long(), P, cfg.temperature)
    model.train(was_training)
    texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    score = get_reward(cfg.reward_mode)
    rewards = torch.tensor([score(t, a) for t, a in zip(texts, answers)], dtype=torch.float32)  # (N,)
    return {
        "input_ids": input_ids.to("cpu", torch.int32),
        "attention_mask": attention_mask.cpu(),
        "mask": mask.cpu(),
        "old_logp": torch.where(mask, old_logp, torch.zeros_like(old_logp)).cpu(),
        "reward": rewards,
        "adv": group_advantages(rewards, cfg.group_size),
        "response_start": P,
    }


def batch_bytes(batch: dict) -> int:
    """Bytes of the tensors of a rollout batch (what the stale queue holds per batch)."""
    return sum(t.numel() * t.element_size() for t in batch.values() if isinstance(t, torch.Tensor))
