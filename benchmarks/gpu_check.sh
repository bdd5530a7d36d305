#!/usr/bin/env bash
# The GPU check of issue 16 (benchmarks/README.md): one CUDA GPU, under 8 minutes, no download.
# Run it whenever a CUDA GPU is available and put its tables in the note; the tests never need it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
exec timeout 480 "$PY" benchmarks/gpu_check.py --device "${DEVICE:-cuda}" "$@"
