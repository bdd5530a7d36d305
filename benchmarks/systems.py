"""Benchmark: simulate a day of a 64-GPU RL system; then the coupled wall-clock study against stale-k.

    OMP_NUM_THREADS=1 python benchmarks/systems.py [--hours 24] [--modes async sync] [--coupled-updates 1000]

Runs the ``day-64gpu`` preset (a 32B reasoning model on 8 TP-4 inference engines and 32
training GPUs, 256 prompts x 16 responses per step; m2po_lab/systems/presets.py) for
``--hours`` simulated hours in each mode asked, and prints one row per run: simulated
responses, events (worker process resumptions: one per response completion, plus the
wake-ups at weight updates and batch rounds), wall time, this process's CPU time (the
wall time less what other jobs on a shared machine take), events per wall second and
simulated hours per wall second. Target: a day of the async system in under 10 s.

Second table: ``m2po-lab wallclock`` on its default system (``fully-async``) and the default
study preset (simulation, then the toy study on the system's ages: 3 methods x (on-policy,
variable ages) x 3 seeds), against the same study with every run stale-k at the ages' bound
(today's fixed-k study of the same runs, eval every 25 updates like the coupled one), each
end to end into a fresh directory (warm start, training, report). Target: the coupled one
within 1.2x of the fixed-k one. ``--coupled-updates 0`` skips it. It never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from m2po_lab.systems import get_preset, simulate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours per run (default 24)")
    ap.add_argument("--modes", nargs="+", default=["async", "sync"], help="modes to run (default: async sync)")
    ap.add_argument("--coupled-updates", type=int, default=1000, help="updates per run of the second table "
                    "(default 1000, the study preset's; 0 skips it)")
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
    if args.coupled_updates:
        coupled_table(args.coupled_updates)
    return 0


def coupled_table(updates: int) -> None:
    """The coupled wall-clock study against the same runs at fixed k (module docstring)."""
    import dataclasses

    import torch

    from m2po_lab.study import run_study
    from m2po_lab.study import get_preset as study_preset
    from m2po_lab.systems.coupling import WallclockConfig, run_wallclock, simulate_pair, study_ages, study_config

    torch.set_num_threads(1)
    cfg = WallclockConfig(updates=updates)
    t0 = time.perf_counter()
    sim = simulate_pair(get_preset(cfg.system))
    sim_s = time.perf_counter() - t0
    coupled = study_config(cfg, study_ages(sim["result"], study_preset(cfg.study).updates_per_step))
    fixed = dataclasses.replace(coupled, ages=())  # the same runs, every one stale-k at the bound
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_study(fixed, f"{tmp}/fixed", progress=False)
        rows.append((f"fixed-k study, staleness {fixed.staleness}", time.perf_counter() - t0))
        t0 = time.perf_counter()
        run_wallclock(cfg, f"{tmp}/coupled", progress=False)
        rows.append((f"coupled: simulate {cfg.system} + variable ages", time.perf_counter() - t0))
    runs = len(coupled.methods) * len(coupled.staleness) * len(coupled.seeds)
    print(f"\n{runs} runs x {updates} updates, 1 thread (simulating both modes alone: {sim_s:.2f} s)")
    print(f"{'study':>52} {'wall (s)':>9} {'/ fixed-k':>9}")
    for name, wall in rows:
        print(f"{name:>52} {wall:>9.1f} {wall / rows[0][1]:>9.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
