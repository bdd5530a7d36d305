#!/usr/bin/env bash
# m2po at staleness 256 (see common.sh for the scaled-down paper settings). Re-run with
# --resume to continue after an interruption:  m2po-lab train-llm --resume $OUT_ROOT/m2po_s256
source "$(dirname "$0")/common.sh"
m2po-lab train-llm "${COMMON[@]}" --method m2po --staleness 256 --out "$OUT_ROOT/m2po_s256"
