"""Benchmark: the toy study's batched runs against one run at a time.

    python benchmarks/study.py [--updates 60] [--runs 45]

Trains the default preset's first ``--runs`` runs for ``--updates`` updates (after the
first 256, i.e. on stale batches: warm-up and base-policy phase excluded) twice: all
runs batched (stacked parameters, one vmapped loss call per method) and each run alone
(R = 1, the same code path). Prints updates/s per run-update for both and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from m2po_lab.study import get_preset
from m2po_lab.study.runner import BatchedStudy, run_specs


def _time(cfg, skip: int, updates: int) -> float:
    study = BatchedStudy(cfg)
    it = study.steps()
    for _ in range(skip):
        next(it)
    t0 = time.perf_counter()
    for _ in range(updates):
        next(it)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=60)
    ap.add_argument("--runs", type=int, default=45)
    ap.add_argument("--skip", type=int, default=260, help="updates to run before timing")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base = get_preset("default", warm_start_steps=20, updates=args.skip + args.updates)
    specs = run_specs(base)[: args.runs]
    batched = _time(base, args.skip, args.updates) * args.runs / len(specs)
    alone = 0.0
    for spec in specs[:3]:  # three single runs, extrapolated to --runs
        one = get_preset("default", methods=(spec.method,), staleness=(spec.staleness,), seeds=(spec.seed,),
                         warm_start_steps=20, updates=args.skip + args.updates)
        alone += _time(one, args.skip, args.updates)
    alone *= args.runs / 3
    run_updates = args.runs * args.updates
    print(f"{'mode':>10} {'wall (s)':>9} {'run-updates/s':>14}")
    print(f"{'batched':>10} {batched:>9.2f} {run_updates / batched:>14.0f}")
    print(f"{'one-by-one':>10} {alone:>9.2f} {run_updates / alone:>14.0f}")
    default = get_preset("default")
    print(f"speed-up of batching: {alone / batched:.1f}x; the default study is {default.updates} updates x "
          f"{len(run_specs(default))} runs = {default.updates * len(run_specs(default))} run-updates")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
