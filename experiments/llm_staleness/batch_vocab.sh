#!/usr/bin/env bash
# A vocabulary of hundreds sampled at temperature 1 (docs/lab-notes/2026-12-03-llm-staleness.md):
# tiny-table1 with 400 extra tokens the task never writes and warm-start label smoothing 0.1
# (the model keeps ~eps/V of probability on every token, a pretrained LM's tail), grpo / m2po / no_tr
# at s=0 and s=256 on 2 seeds; its own warm start, at the warm-start lr 3e-3 the docs' numbers were
# measured with (the preset now uses 1e-3). ~20 min on 2 cores. Then analyze.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
$PY experiments/llm_staleness/run.py --out runs/t1_vocab495 --preset tiny-table1 --methods grpo m2po no_tr --seeds 0 1 \
    --extra-tokens 400 --label-smoothing 0.1 --warm-start-lr 3e-3 --workers 2 --no-progress
$PY experiments/llm_staleness/analyze.py runs/t1_vocab495 --staleness 256
