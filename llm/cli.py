"""``m2po-lab train-llm``: options generated from :class:`TrainConfig`; transformers loads lazily."""

from __future__ import annotations

import argparse
import sys

PRESET_NAMES = ("tiny-arith",)  # kept in sync with config.PRESETS (a test checks it)


def _cmd_train_llm(args: argparse.Namespace) -> int:
    try:
        from m2po_lab.cliutil import dataclass_overrides

        from .config import TrainConfig, get_preset
        from .trainer import resume, train
    except ImportError as err:  # transformers missing
        print(f"m2po-lab train-llm: error: {err} (pip install 'm2po-lab[llm]')", file=sys.stderr)
        return 2
    try:
        if args.resume:
            summary = resume(args.resume, progress=not args.no_progress)
            out = args.resume
        else:
            if args.out is None:
                raise ValueError("out: give --out DIR (or --resume DIR)")
            cfg = get_preset(args.preset, **dataclass_overrides(args, TrainConfig))
            summary = train(cfg, args.out, progress=not args.no_progress)
            out = args.out
    except ValueError as err:
        print(f"m2po-lab train-llm: error: {err}", file=sys.stderr)
        return 2
    start, final = summary["start"], summary["final"]
    print(f"wrote {out}/metrics.jsonl ({summary['updates']} updates, {summary['wall_s']:.0f} s of RL)")
    print(f"  eval/accuracy (greedy): {start.get('eval/accuracy', float('nan')):.3f} at start -> "
          f"{final.get('eval/accuracy', float('nan')):.3f};  sampled: {start.get('eval/accuracy_sampled', float('nan')):.3f}"
          f" -> {final.get('eval/accuracy_sampled', float('nan')):.3f}")
    if "eval/accuracy_flexible" in final:
        print(f"  greedy, any answer format: {start.get('eval/accuracy_flexible', float('nan')):.3f} -> "
              f"{final['eval/accuracy_flexible']:.3f}  (the strict reward also needs `#### N`)")
    print(f"  stale queue: {summary['bytes_per_queued_seq']:.0f} bytes per queued sequence")
    return 0


def add_train_llm_parser(sub) -> None:
    """Register the ``train-llm`` subcommand on an argparse subparsers object."""
    from m2po_lab.cliutil import add_dataclass_options

    p = sub.add_parser(
        "train-llm",
        help="RL-train a small causal LM with stale rollouts (GRPO, M2PO, ...)",
        description="Train a causal LM on a verifiable task with stale-k rollouts and write a run directory "
        "(config.json, metrics.jsonl, checkpoint.pt; docs/run_format.md). --preset tiny-arith runs on a CPU in "
        "minutes; on a GPU give --model, --task and --data. Interrupted? --resume DIR continues exactly.",
    )
    p.add_argument("--preset", default=None, help=f"start from a preset: {', '.join(PRESET_NAMES)} (default: none)")
    p.add_argument("--out", default=None, help="new run directory")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from .config import TrainConfig  # no transformers import: `m2po-lab --help` works without it

    add_dataclass_options(p, TrainConfig)
    p.set_defaults(func=_cmd_train_llm)
