#!/usr/bin/env bash
# The design changes tried after the tiny-table1 study showed no collapse
# (docs/lab-notes/2026-12-03-llm-staleness.md): a higher learning rate, then no gradient
# clipping, each for grpo / m2po / no_tr at s=0 and s=256 on 3 seeds, from the warm start
# of runs/table1 (made by `m2po-lab study-llm --preset tiny-table1 --out runs/table1`).
# ~10 min per study on 2 cores. Then analyze.py on each.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
COMMON=(--warm-start-from runs/table1 --preset tiny-table1 --methods grpo m2po no_tr --workers 2 --no-progress)
$PY experiments/llm_staleness/run.py --out runs/t1_lr2e-4 "${COMMON[@]}" --lr 2e-4
$PY experiments/llm_staleness/run.py --out runs/t1_noclip "${COMMON[@]}" --max-grad-norm 0
for s in runs/t1_lr2e-4 runs/t1_noclip; do $PY experiments/llm_staleness/analyze.py "$s" --staleness 256; done
