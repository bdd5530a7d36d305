"""Tiny causal LMs built locally, loading, per-token log-probs and sampling.

- `build_tiny_model`: a small Qwen2 or Llama config over the character
  tokenizer (`tokenizer.py`), randomly initialised from a seed and saved with
  `save_pretrained` (model + tokenizer) -- no download anywhere.
- `load_model_and_tokenizer`: `AutoModelForCausalLM` / `AutoTokenizer`
  `.from_pretrained` (the character tokenizer through `load_char_tokenizer`),
  with a clear error when the path does not exist.
- `token_logprobs`: log pi(a_t | s_t) of given response tokens, the `logp` /
  `old_logp` of the policy losses (`log_ratio = logp - old_logp`).
- `generate`: sample responses with HF `generate`, return ids + response mask.

Pitfall (behaviour log-probs): take `old_logp` from `token_logprobs` of the
model that generated the rollout, evaluated in a normal forward pass, *not*
from `generate(..., output_scores=True)`. Those scores come after the logits
processors (temperature, top-k/top-p, repetition penalty, ...) and from the
KV-cached inference path; as soon as a processor changes them (or dtype /
kernel differences creep in) the importance ratio r = pi_theta / pi_behav is
no longer 1 on-policy, and every off-policy correction (clip, M2PO masking)
acts on noise. `generate` below disables top-k/top-p so that the sampling
distribution is exactly softmax(logits / temperature), which is what
`token_logprobs(..., temperature=...)` computes.

transformers 5.x notes: `from_pretrained(dtype=...)` replaces `torch_dtype=`;
`PreTrainedTokenizerFast` is an alias of `TokenizersBackend`; the model's
forward argument `past_key_values` is being renamed `cache`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from .tokenizer import CHARS, build_char_tokenizer, extra_chars, is_char_tokenizer_dir, load_char_tokenizer

if TYPE_CHECKING:
    from transformers import GenerationMixin

_CONFIGS = {"qwen2": Qwen2Config, "llama": LlamaConfig}


def build_tiny_model(
    out_dir: str | Path,
    arch: str = "qwen2",
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    max_positions: int = 512,
    tie_embeddings: bool = True,
    seed: int = 0,
    extra_tokens: int = 0,
) -> Path:
    """Create a randomly initialised tiny causal LM and save it to `out_dir`.

    Args:
        out_dir: directory to write (created if missing); it receives the
            model (config.json, model.safetensors, generation_config.json) and
            the character tokenizer.
        arch: "qwen2" or "llama".
        hidden: hidden size; must be divisible by `heads`.
        layers: number of decoder layers.
        heads: attention heads; `kv_heads` (default `heads`) for GQA.
        intermediate: MLP width (default 4 * hidden).
        max_positions: maximum sequence length (RoPE table size).
        tie_embeddings: share input embedding and LM head.
        seed: weight-initialisation seed (global RNG is forked, not touched).
        extra_tokens: tokens added to the character vocabulary that no task
            writes (`tokenizer.extra_chars`): a vocabulary of hundreds.

    Returns:
        `Path(out_dir)`, loadable with `load_model_and_tokenizer`.
        hidden 128, 2 layers, 4 heads -> about 0.4M parameters.
    """
    if arch not in _CONFIGS:
        raise ValueError(f"arch must be one of {sorted(_CONFIGS)}, got {arch!r}")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    tok = build_char_tokenizer(CHARS + extra_chars(extra_tokens))
    config = _CONFIGS[arch](
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_embeddings,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def _looks_like_path(name: str) -> bool:
    """True if `name` can only be a filesystem path (not a hub id `org/name`)."""
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or os.sep != "/" and os.sep in name
    )


def load_model_and_tokenizer(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    local_files_only: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer with `from_pretrained`.

    Args:
        name_or_path: a local directory (e.g. from `build_tiny_model`) or a
            Hugging Face model id (resolved from the local cache or the hub).
        device: where to put the model.
        dtype: parameter dtype (float32 for the tiny CPU models).
        trust_remote_code: forwarded to `from_pretrained`; off unless asked.
        local_files_only: never contact the hub.

    Returns:
        (model in eval mode on `device`, tokenizer with left padding).

    Raises:
        FileNotFoundError: naming `name_or_path` when it is neither an
            existing directory nor resolvable as a model id.
    """
    name = str(name_or_path)
    if not Path(name).expanduser().exists() and _looks_like_path(name):
        raise FileNotFoundError(f"model path does not exist: {name!r}")
    kwargs = dict(trust_remote_code=trust_remote_code, local_files_only=local_files_only)
    tokenizer: PreTrainedTokenizerBase
    try:
        if is_char_tokenizer_dir(name):  # AutoTokenizer would rebuild it byte-level for Qwen2 (drops spaces)
            tokenizer = load_char_tokenizer(name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:
        if Path(name).expanduser().exists():
            raise
        raise FileNotFoundError(
            f"{name!r} is not a local directory and could not be resolved as a "
            f"Hugging Face model id (offline or not cached?): {err}"
        ) from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # common for Llama checkpoints
        tokenizer.pad_token = tokenizer.eos_token
    # transformers wraps `to` in functools.wraps(nn.Module.to): mypy then takes `device` for `self`
    return model.to(device).eval(), tokenizer  # type: ignore[arg-type]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... counted over real tokens only (left padding aware).

    Matches what HF `generate` uses, so a left-padded prompt gets the same
    log-probs as the unpadded one. attention_mask: (B, T) -> (B, T) long.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)


def token_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log pi(a_t | s_t) of the response tokens `input_ids[:, response_start:]`.

    logp[b, t] = log_softmax(logits[b, response_start + t - 1] / temperature)
                 [input_ids[b, response_start + t]]
    (the logits at position j predict token j + 1, hence the shift by one).

    Args:
        model: a causal LM; gradients flow unless called under no_grad.
        input_ids: (B, T) left-padded prompt (B, P) followed by response (B, R),
            T = P + R, P = response_start >= 1.
        attention_mask: (B, T) 1 for real tokens (prompt and response; padding
            after EOS may be 0 or 1 -- those positions are masked by the caller).
        response_start: P, the column where responses begin.
        temperature: the sampling temperature the behaviour policy used.

    Returns:
        logp: (B, R) float32 log-probs; values at padded response positions
        are meaningless and must be masked with the response mask.
    """
    if not 1 <= response_start < input_ids.shape[1]:
        raise ValueError(f"response_start must be in [1, T), got {response_start}")
    n_resp = input_ids.shape[1] - response_start  # R
    out = model(
        input_ids=input_ids,  # (B, T)
        attention_mask=attention_mask,  # (B, T)
        position_ids=position_ids_from_mask(attention_mask),  # (B, T)
        use_cache=False,
        logits_to_keep=n_resp + 1,  # only the last R + 1 positions
    )
    logits = out.logits[:, :-1].float() / temperature  # (B, R, V)
    targets = input_ids[:, response_start:]  # (B, R)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, R)
    return picked - torch.logsumexp(logits, dim=-1)  # (B, R)


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """True up to and including the first EOS of each row, False after it.

    response_ids: (B, R) -> mask (B, R) bool. Rows without EOS are all True
    (truncated by max_new_tokens).
    """
    is_eos = response_ids == eos_token_id  # (B, R)
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()  # EOS strictly before t
    return eos_before == 0  # (B, R)


def _seed_from(seed: int | None, generator: torch.Generator | None) -> int | None:
    """Seed for the forked global RNG: `seed`, else a draw from `generator`."""
    if seed is not None:
        return seed
    if generator is not None:
        return int(torch.randint(0, 2**62, (1,), generator=generator))
    return None


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    greedy: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses with HF `generate` (pure softmax(logits / T) sampling).

    HF `generate` draws from the *global* torch RNG and takes no generator.
    To keep results reproducible without touching global state, sampling
    runs inside `torch.random.fork_rng` seeded with `seed`, or with a seed
    drawn from `generator` (so one generator gives a reproducible stream of
    different draws). With neither, the global RNG is used as is.

    Args:
        prompt_ids: (B, P) left-padded prompts (tokenizer padding_side="left").
        attention_mask: (B, P) 1 for real prompt tokens.
        max_new_tokens: maximum response length.
        temperature: sampling temperature (ignored when `greedy`).
        greedy: argmax decoding instead of sampling.
        seed / generator: randomness source, see above.

    Returns:
        response_ids: (B, R) long, R <= max_new_tokens, pad after EOS.
        response_mask: (B, R) bool, True up to and including the first EOS.
    """
    sample_kwargs = (
        dict(do_sample=False)
        if greedy
        else dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    )
    devices = [prompt_ids.device] if prompt_ids.device.type == "cuda" else []
    run_seed = _seed_from(seed, generator)
    with torch.random.fork_rng(devices=devices, enabled=run_seed is not None):
        if run_seed is not None:
            torch.manual_seed(run_seed)
        # PreTrainedModel does not declare `generate`: the causal-LM classes mix in GenerationMixin
        out = cast("GenerationMixin", model).generate(
            input_ids=prompt_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **sample_kwargs,
        )  # (B, P + R)
    response_ids = out[:, prompt_ids.shape[1] :]  # (B, R)
    return response_ids, response_mask_from_ids(response_ids, tokenizer.eos_token_id)
