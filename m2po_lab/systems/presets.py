"""Named systems, with the source of every number (or the word "illustrative").

Published facts used here:
- AReaL's benchmark setting (inclusionAI/AReaL benchmark/verl_v0_3_0_post1_312a8cb/README.md):
  512 prompts x 16 answers per step, 31k max generation (32k context - 1k prompt budget),
  DeepSeek-R1-Distill-Qwen models; build_cmd.py in benchmark/verl_312a8cb gives 3/4 of the
  GPUs to SGLang inference (TP 1 below 32B) and 1/4 to training.
- AReaL v0.3 blog (inclusionAI/AReaL blog/AReaL_v0_3.md): 1.5B on 16 nodes (of 8 H800s,
  blog/AReaL_v0_1.md), 1000 PPO steps, 41.0 h synchronous vs 14.8 h asynchronous; "PPO
  Minibatches 1"; eta <= 4 costs little accuracy; AReaL's docs set max_head_offpolicyness 4
  as their example (docs/algorithms/async.md). Headline speed-up: 2.57x in arXiv 2505.24298v1
  (abstract), 2.77x in later versions.
- Qwen2.5-1.5B architecture (HF config.json: hidden 1536, 28 layers, 2 KV heads of 128,
  intermediate 8960, vocab 151936, tied embeddings), shared by DeepSeek-R1-Distill-Qwen-1.5B;
  Qwen2.5-32B (hidden 5120, 64 layers, 8 KV heads of 128, intermediate 27648, vocab 152064,
  untied: 32.76B parameters), the base of DeepSeek-R1-Distill-Qwen-32B.
- H800 SXM = H100 SXM compute and memory (it differs in NVLink and FP64): 3.35 TB/s HBM3,
  989 TFLOPS dense BF16 (NVIDIA H100 datasheet, tabulated at glennklockwood.com/garden/processors/h100).
Illustrative (no published figure found): the fraction of peak bandwidth decoding reaches
(0.6), training MFU (0.4), prefill efficiency (0.5), the prompt length, weight-sync time,
the KV-cache fraction of memory (0.8) and the tail width of the lengths (lengths.py).
"""

from __future__ import annotations

from dataclasses import replace

from .._checks import check_choice
from .config import SystemConfig, decode_roofline
from .lengths import LENGTH_PRESETS, LengthDist, length_overrides

H800_BW, H800_BF16, H800_MEM = 3.35e12, 989e12, 80e9  # bytes/s, FLOP/s, bytes
DECODE_EFF, MFU, PREFILL_EFF, KV_FRACTION = 0.6, 0.4, 0.5, 0.8  # illustrative


def _dense_params(hidden: int, layers: int, kv_heads: int, inter: int, vocab: int, tied: bool) -> float:
    """Parameters of a Qwen2-style decoder: attention (heads of 128), SwiGLU MLP, embeddings."""
    attn = 2 * hidden * hidden + 2 * hidden * kv_heads * 128
    return layers * (attn + 3 * hidden * inter) + vocab * hidden * (1 if tied else 2)


def _model_system(params: float, layers: int, hidden: int, kv_heads: int, tp: int, lengths: str,
                  prompt: int) -> dict:
    """Decode, prefill and training throughput fields from the roofline of a model on H800s."""
    dist = LengthDist("lognormal", LENGTH_PRESETS[lengths].cap, LENGTH_PRESETS[lengths].mean,
                      LENGTH_PRESETS[lengths].sigma)
    context = prompt + dist.size_biased_mean() / 2  # mean KV length a decode step reads, tokens
    kv_token = 2 * layers * kv_heads * 128 * 2  # K and V, bf16, bytes per token
    peak, half = decode_roofline(2 * params, kv_token, context, tp * H800_BW, DECODE_EFF)
    kv_room = KV_FRACTION * (tp * H800_MEM - 2 * params)
    flops_token = 8 * params + 16 * layers * hidden * context  # fwd+bwd (6N) + log-prob recompute (2N) + attention
    return dict(decode_tokens_per_s=round(peak), decode_half_concurrency=round(half, 1),
                max_concurrency=int(kv_room / (kv_token * context)) // 16 * 16,
                prefill_tokens_per_s=round(PREFILL_EFF * tp * H800_BF16 / (2 * params)),
                train_tokens_per_s_per_gpu=MFU * H800_BF16 / flops_token, prompt_tokens=prompt,
                **length_overrides(lengths))


def _areal_1p5b() -> SystemConfig:
    m = _model_system(_dense_params(1536, 28, 2, 8960, 151936, tied=True), 28, 1536, 2, 1, "r1-distill-32k", 512)
    per_gpu = m.pop("train_tokens_per_s_per_gpu")
    return SystemConfig(mode="async", partial_rollout=True, max_staleness=4, drop_stale=False, rollout_workers=96,
                        gpus_per_worker=1, trainer_gpus=32, train_tokens_per_s=round(32 * per_gpu),
                        updates_per_step=1, weight_sync_s=3.0, batch_prompts=512, group_size=16,
                        steps=12, warmup_steps=4, **m)


def _day_64gpu() -> SystemConfig:
    m = _model_system(_dense_params(5120, 64, 8, 27648, 152064, tied=False), 64, 5120, 8, 4, "r1-distill-32k", 512)
    per_gpu = m.pop("train_tokens_per_s_per_gpu")
    return SystemConfig(mode="async", partial_rollout=True, max_staleness=4, rollout_workers=8,
                        gpus_per_worker=4, trainer_gpus=32, train_tokens_per_s=round(32 * per_gpu),
                        updates_per_step=4, weight_sync_s=20.0, batch_prompts=256, group_size=16,
                        steps=100000, hours=24.0, warmup_steps=2, **m)


PRESETS: dict[str, SystemConfig] = {
    # AReaL's published 1.5B setting (module docstring): 16 nodes of 8 H800s, 96 SGLang GPUs + 32
    # training GPUs, 512 x 16 per step, 31,744 new tokens at most, eta = 4, interruptible rollouts.
    "areal-1.5b": _areal_1p5b(),
    # A day of a 64-GPU system with a 32B reasoning model: 8 TP-4 inference engines, 32 training GPUs
    # (the split, the batch, eta and the weight-sync time are illustrative; the rest as module docstring).
    "day-64gpu": _day_64gpu(),
    # The closed forms' check system (docs/systems.md, tests): 4 workers, instant prefill, no weight-load
    # pause, unbounded staleness; set --train-tokens-per-s and --max-staleness to pick a regime. Illustrative.
    "small": SystemConfig(rollout_workers=4, gpus_per_worker=1, trainer_gpus=1, max_concurrency=32,
                          decode_tokens_per_s=4000.0, decode_half_concurrency=8.0, prefill_tokens_per_s=1e9,
                          prompt_tokens=0, train_tokens_per_s=1e7, weight_sync_s=0.0, batch_prompts=16, group_size=4,
                          max_staleness=None, length_mean=1000.0, length_sigma=0.5, max_new_tokens=4000, steps=300,
                          warmup_steps=20, sync_colocated=False),
    # Seconds on a laptop, for teaching and tests: every number illustrative.
    "teaching": SystemConfig(rollout_workers=4, gpus_per_worker=1, trainer_gpus=2, max_concurrency=32,
                             decode_tokens_per_s=4000.0, decode_half_concurrency=8.0, prefill_tokens_per_s=1e5,
                             prompt_tokens=128, train_tokens_per_s=40000.0, weight_sync_s=1.0, batch_prompts=16,
                             group_size=4, max_staleness=2, steps=40, **length_overrides("short")),
}
# The teaching system with 3x the rollout workers and no staleness bound: fully asynchronous, and still
# stationary (the trainer keeps up), mean age ~11 versions, p99 ~21. The default system of m2po-lab wallclock
# (docs/systems.md, "Reward against wall-clock"). Illustrative.
PRESETS["fully-async"] = replace(PRESETS["teaching"], rollout_workers=12, max_staleness=None, steps=100,
                                 warmup_steps=20)
# A rollout pool that outruns its trainer (16 workers) under a loose bound, eta = 64 versions: the queue fills to
# the bound and nearly every sample is trained ~60 versions old, 240 of 4 updates: the paper's s = 256 regime
# (the pool can generate ~23% more groups per second than the trainer takes). 300 warm-up steps: the ages grow
# for ~300 steps. Illustrative.
PRESETS["loose-bound"] = replace(PRESETS["teaching"], rollout_workers=16, max_staleness=64, steps=400,
                                 warmup_steps=300)


def get_preset(name: str, **overrides) -> SystemConfig:
    """A preset with fields replaced by ``overrides`` (None values are ignored)."""
    check_choice("preset", name, PRESETS)
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
