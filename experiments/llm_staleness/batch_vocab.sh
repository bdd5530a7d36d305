#!/usr/bin/env bash
# A vocabulary of hundreds sampled at temperature 1 (docs/lab-notes/2026-12-03-llm-staleness.md):
# tiny-table1 with 400 extra tokens the task never writes and warm-start label smoothing 0.1
# (the model keeps ~eps/V of probability on every token, a pretrained LM's tail), grpo / m2po / no_tr
# at s=0 and s=256, its own warm start; then analyze.py.
#   bash experiments/llm_staleness/batch_vocab.sh                 # 3 seeds, the preset's warm-start lr 1e-3
#                                                                 # -> runs/t1_vocab495_ws1e-3 (~17 min on 2 cores)
#   OUT=runs/t1_vocab495 SEEDS="0 1" WS_LR=3e-3 bash experiments/llm_staleness/batch_vocab.sh
#                                                                 # the first measurement: 2 seeds, lr 3e-3 (~25 min)
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0 1 2}
OUT=${OUT:-runs/t1_vocab495_ws1e-3}
WORKERS=${WORKERS:-2}
LR_ARGS=()
if [[ -n "${WS_LR:-}" ]]; then LR_ARGS=(--warm-start-lr "$WS_LR"); fi
# shellcheck disable=SC2086
$PY experiments/llm_staleness/run.py --out "$OUT" --preset tiny-table1 --methods grpo m2po no_tr --seeds $SEEDS \
    --extra-tokens 400 --label-smoothing 0.1 "${LR_ARGS[@]}" --workers "$WORKERS" --no-progress
$PY experiments/llm_staleness/analyze.py "$OUT" --staleness 256
