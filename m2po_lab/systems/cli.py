"""``m2po-lab systems``: simulate a preset system (options generated from SystemConfig) and print its outputs.

Registering the parser imports no SimPy; running the command does.
"""

from __future__ import annotations

import argparse
import sys

PROG = "m2po-lab systems"
ROWS = (
    "staleness/sample_mean", "staleness/sample_p50", "staleness/sample_p99", "staleness/sample_max",
    "staleness/token_mean", "staleness/token_p50", "staleness/token_p99", "util/rollout",
    "util/rollout_weight_load", "util/trainer", "throughput/steps_per_hour", "throughput/updates_per_hour",
    "samples/generated", "samples/trained", "samples/dropped", "sim/hours", "sim/events",
)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def format_table(out: dict, base: dict | None, pmf, estimate: dict) -> str:
    """The outputs as a text table (a ``synchronous`` column when the baseline ran), the age pmf and
    the closed-form mean staleness of ``mean_staleness_estimate``."""
    head = f"{'output':30s} {'this system':>12s}" + (f" {'synchronous':>12s}" if base else "")
    lines = [head, "-" * len(head)]
    for k in ROWS:
        lines.append(f"{k:30s} {_fmt(out[k]):>12s}" + (f" {_fmt(base[k]):>12s}" if base else ""))
    if base:
        lines.append(f"{'speedup/vs_sync':30s} {out['speedup/vs_sync']:>12.3f}")
    ages = "  ".join(f"{a}:{p:.3f}" for a, p in enumerate(pmf) if p > 0)
    lines.append(f"P(sample age = a versions): {ages}")
    closed = "none holds here" if estimate["mean"] is None else f"{estimate['mean']:.3f}"
    lines.append(f"closed-form mean staleness ({estimate['regime']}): {closed}")
    return "\n".join(lines)


def _one_line_error(parser: argparse.ArgumentParser, prog: str = PROG):
    def error(message: str):
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
    return error


def _cmd_systems(args: argparse.Namespace) -> int:
    from m2po_lab.cliutil import dataclass_overrides

    from .closed_form import mean_staleness_estimate
    from .config import SystemConfig
    from .lengths import length_overrides
    from .presets import get_preset

    try:
        from .results import age_pmf, summary
        from .run import simulate
    except ImportError as err:  # simpy missing
        print(f"{PROG}: error: {err} (pip install 'm2po-lab[systems]')", file=sys.stderr)
        return 2
    try:
        lengths = length_overrides(args.lengths) if args.lengths else {}
        cfg = get_preset(args.preset, **{**lengths, **dataclass_overrides(args, SystemConfig)})
        res = simulate(cfg)
        out = summary(res)
        base = None
        if not args.no_baseline and cfg.mode != "sync":
            base = summary(simulate(cfg.synchronous()))
            out["speedup/vs_sync"] = out["throughput/updates_per_hour"] / base["throughput/updates_per_hour"]
        pmf = age_pmf(res)
    except ValueError as err:  # a bad option or an empty window: one line, nothing else
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    pools = (f"{cfg.total_gpus} GPUs time-shared" if cfg.colocated else
             f"{cfg.rollout_workers} x {cfg.gpus_per_worker} rollout GPUs + {cfg.trainer_gpus} trainer GPUs")
    print(f"{args.preset}: mode {cfg.mode}, max_staleness {cfg.max_staleness}, partial_rollout "
          f"{cfg.partial_rollout}; {pools}; {cfg.batch_prompts} x {cfg.group_size} responses per step")
    print(format_table(out, base, pmf, mean_staleness_estimate(cfg)))
    return 0


def add_systems_parser(sub) -> None:
    """Register the ``systems`` subcommand on an argparse subparsers object."""
    from m2po_lab.cliutil import add_dataclass_options

    from .config import SystemConfig
    from .lengths import LENGTH_PRESETS
    from .presets import PRESETS

    p = sub.add_parser(
        "systems",
        help="simulate an RL system with stale rollouts: staleness, utilisation, speed-up over synchronous",
        description="Discrete-event simulation of rollout workers, a trainer and a staleness rule "
        "(docs/systems.md). Prints per-sample and per-token staleness, GPU utilisation, updates per hour "
        "and the speed-up over the same system run synchronously.",
    )
    p.error = _one_line_error(p)
    p.add_argument("--preset", default="teaching", help=f"one of {sorted(PRESETS)} (default: teaching)")
    p.add_argument("--lengths", default=None,
                   help=f"response-length preset, one of {sorted(LENGTH_PRESETS)} (default: the preset's)")
    p.add_argument("--no-baseline", action="store_true", help="skip the synchronous run (no speed-up)")
    add_dataclass_options(p, SystemConfig)
    p.set_defaults(func=_cmd_systems)


WALLCLOCK_PROG = "m2po-lab wallclock"


def _cmd_wallclock(args: argparse.Namespace) -> int:
    from m2po_lab.cliutil import dataclass_overrides, show_progress

    from .coupling import WallclockConfig, run_wallclock
    from .wallclock import table_lines

    try:
        cfg = WallclockConfig(**dataclass_overrides(args, WallclockConfig))
        result = run_wallclock(cfg, args.out, progress=show_progress(args), threads=args.threads, force=args.force)
    except ImportError as err:  # simpy missing
        print(f"{WALLCLOCK_PROG}: error: {err} (pip install 'm2po-lab[systems]')", file=sys.stderr)
        return 2
    except ValueError as err:  # a bad option or an unusable --out (RunDirError): one line, nothing written
        print(f"{WALLCLOCK_PROG}: error: {err}", file=sys.stderr)
        return 2
    ttt = result["time_to_target"]
    print(f"{cfg.system}: throughput speed-up of asynchronous over synchronous {result['speedup_throughput']:.2f}x; "
          f"target {ttt['target']:.3f} ({cfg.target:.0%} of synchronous GRPO's final {ttt['reference']:.3f})")
    print("\n".join(table_lines(ttt)))
    for line in result["headline"]:
        print(line)
    print(f"wrote {args.out}/wallclock.md, wallclock.json, reward_vs_hours.png and study/ "
          f"(study {result['study_wall_s']:.0f} s)")
    return 0


def add_wallclock_parser(sub) -> None:
    """Register the ``wallclock`` subcommand (a system's ages drive the toy study; reward against simulated hours)."""
    from m2po_lab.cliutil import add_dataclass_options

    from .coupling import WallclockConfig

    p = sub.add_parser(
        "wallclock",
        help="simulate a system, train the toy study on its sample ages, report reward against simulated hours",
        description="Simulate the system asynchronously and synchronously, train the toy study on-policy and on "
        "the asynchronous system's sample ages, map updates to simulated hours and report each method's time to "
        "reach a target reward (docs/systems.md). Interrupted? Run the same command again: the study resumes.",
    )
    p.error = _one_line_error(p, WALLCLOCK_PROG)
    p.add_argument("--out", default="runs/wallclock", help="output directory (default: runs/wallclock)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for tiny tensors)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal either)")
    p.add_argument("--force", action="store_true", help="start the study over")
    add_dataclass_options(p, WallclockConfig)
    p.set_defaults(func=_cmd_wallclock)
