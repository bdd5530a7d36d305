#!/usr/bin/env bash
# Shared settings of the paper-style three-way comparison on ONE GPU (sourced by the run_*.sh).
#
# The paper (arXiv 2510.01161, Sec. 5): lr 1e-6, 256 prompts x 8 responses per rollout step,
# mini-batches of 64 prompts -> 4 optimizer updates per step, tau_M2 = 0.04, no KL to a
# reference, temperature 1, staleness s = 256 updates (a queue 64 rollout steps deep).
# Scaled down for one GPU and Qwen2.5-0.5B-Instruct on GSM8K:
#   - 64 prompts x 8 per step, 4 updates of 16 prompts (128 sequences) each: the paper's
#     4 updates per step and group size 8 are kept, the batch is 4x smaller so that one
#     H100 does a step in about a minute;
#   - s = 256 updates is kept (= 64 rollout steps of 4 updates); the stale queue stores
#     token ids (int32) + masks (bool) + log-probs (fp32) only: ~5 bytes per prompt token and
#     ~10 per response token, ~6 KB per sequence, ~200 MB of CPU memory for the 65 queued
#     batches of 512 sequences -- never 64 model copies;
#   - lr 1e-6 as in the paper (a smaller batch is noisier, so no increase);
#   - 400 updates = 100 rollout steps: past the 256 updates where the s=256 runs still train
#     on base-model rollouts, enough to see GRPO s=256 fall behind (the paper's gap shows
#     within the first few hundred updates); the paper trains longer;
#   - max_new_tokens 512 (GSM8K solutions of an instruct model fit), micro-batch 8 with
#     gradient checkpointing and bf16 autocast to fit 128 x ~700 tokens in 80 GB.
# Data: GSM8K through Hugging Face datasets (`--dataset openai/gsm8k --dataset-config main`,
#   train on the train split, evaluate on test); a local copy works offline: DATASET=/path/to/dir
#   with train.jsonl and test.jsonl, or a save_to_disk directory.
# Prompts: Qwen2.5-Instruct's tokenizer carries a chat template, so each question goes
#   through apply_chat_template (--no-chat-template would feed the raw text).
# Reward: math-verify (HF's symbolic checker, pip install 'm2po-lab[math]'); REWARD=strict is
#   verl's GSM8K rule (`#### N` only), REWARD=flexible our number normaliser (docs/rewards.md).
# Metrics: metrics.jsonl always; REPORT_TO=tensorboard|wandb|trackio also sends them to a tracker.
set -euo pipefail
DATASET=${DATASET:-openai/gsm8k}
MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
OUT_ROOT=${OUT_ROOT:-runs/gsm8k-0.5b}
REWARD=${REWARD:-math-verify}
REPORT_TO=${REPORT_TO:-tensorboard}
DATASET_ARGS=(--dataset "$DATASET" --split train --eval-split test)
if [[ "$DATASET" == "openai/gsm8k" ]]; then DATASET_ARGS+=(--dataset-config main); fi
COMMON=(
  --model "$MODEL" --task gsm8k "${DATASET_ARGS[@]}" --reward-mode "$REWARD" --report-to "$REPORT_TO"
  --prompts-per-step 64 --group-size 8 --updates-per-step 4 --micro-batch-size 8
  --lr 1e-6 --max-grad-norm 1.0 --max-new-tokens 512 --temperature 1.0 --tau 0.04
  --updates 400 --eval-every 40 --eval-prompts 256 --hist-every 10
  --checkpoint-every 40 --gradient-checkpointing --bf16 --device cuda
)
