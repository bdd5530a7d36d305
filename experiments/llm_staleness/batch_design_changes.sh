#!/usr/bin/env bash
# The design changes tried after the tiny-table1 study showed no collapse
# (docs/lab-notes/2026-12-03-llm-staleness.md): a higher learning rate, then no gradient
# clipping, each for grpo / m2po / no_tr at s=0 and s=256 on 3 seeds, from the warm start
# the numbers in the docs were measured from: the preset's, trained at warm-start lr 3e-3
# (the preset now uses 1e-3). Make it first:
#   m2po-lab study-llm --preset tiny-table1 --warm-start-lr 3e-3 --out runs/table1_wslr3e-3
# (WARM=runs/table1 starts from the current preset's warm start instead: other numbers).
# ~10 min per study on 2 cores. Then analyze.py on each.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
WARM=${WARM:-runs/table1_wslr3e-3}
LR_ARGS=(); if [[ "$WARM" == runs/table1_wslr3e-3 ]]; then LR_ARGS=(--warm-start-lr 3e-3); fi
COMMON=(--warm-start-from "$WARM" --preset tiny-table1 "${LR_ARGS[@]}" --methods grpo m2po no_tr --workers 2 --no-progress)
$PY experiments/llm_staleness/run.py --out runs/t1_lr2e-4 "${COMMON[@]}" --lr 2e-4
$PY experiments/llm_staleness/run.py --out runs/t1_noclip "${COMMON[@]}" --max-grad-norm 0
for s in runs/t1_lr2e-4 runs/t1_noclip; do $PY experiments/llm_staleness/analyze.py "$s" --staleness 256; done
