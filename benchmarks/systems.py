"""Benchmark: simulate a day of a 64-GPU RL system and report the simulator's speed.

    OMP_NUM_THREADS=1 python benchmarks/systems.py [--hours 24] [--modes async sync]

Runs the ``day-64gpu`` preset (a 32B reasoning model on 8 TP-4 inference engines and 32
training GPUs, 256 prompts x 16 responses per step; m2po_lab/systems/presets.py) for
``--hours`` simulated hours in each mode asked, and prints one row per run: simulated
responses, events (worker process resumptions: one per response completion, plus the
wake-ups at weight updates and batch rounds), wall time, this process's CPU time (the
wall time less what other jobs on a shared machine take), events per wall second and
simulated hours per wall second. Target: a day of the async system in under 10 s. It
never asserts.
"""

from __future__ import annotations

import argparse
import time

from m2po_lab.systems import get_preset, simulate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours per run (default 24)")
    ap.add_argument("--modes", nargs="+", default=["async", "sync"], help="modes to run (default: async sync)")
    args = ap.parse_args(argv)
    print(f"{'mode':>13} {'responses':>10} {'events':>9} {'wall (s)':>9} {'cpu (s)':>8} {'events/s':>9} "
          f"{'sim h / s':>9}")
    for mode in args.modes:
        cfg = get_preset("day-64gpu", mode=mode, hours=args.hours)
        t0, c0 = time.perf_counter(), time.process_time()
        res = simulate(cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{mode:>13} {len(res.length):>10d} {res.wakeups:>9d} {wall:>9.2f} {cpu:>8.2f} {res.wakeups / wall:>9.0f} "
              f"{res.t_end / 3600 / wall:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
