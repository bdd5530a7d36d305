#!/usr/bin/env bash
# The paper's three-way comparison (Table 1 shape): GRPO s=0, GRPO s=256, M2PO s=256, one
# after the other on one GPU (~1-2 h each for 400 updates on an H100; measure before trusting).
# Expect: M2PO s=256 close to GRPO s=0; GRPO s=256 lower, with a higher clip/frac.
set -euo pipefail
here="$(dirname "$0")"
bash "$here/run_grpo_s0.sh"
bash "$here/run_grpo_s256.sh"
bash "$here/run_m2po_s256.sh"
