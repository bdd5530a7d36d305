"""``m2po-lab train-llm``: options generated from :class:`TrainConfig`; transformers loads lazily."""

from __future__ import annotations

import argparse
import sys

PRESET_NAMES = ("tiny-arith",)  # kept in sync with config.PRESETS (a test checks it)


def _cmd_train_llm(args: argparse.Namespace) -> int:
    try:
        from m2po_lab.cliutil import dataclass_overrides, show_progress

        from .config import TrainConfig, get_preset
        from .trainer import resume, train
    except ImportError as err:  # transformers missing
        print(f"m2po-lab train-llm: error: {err} (pip install 'm2po-lab[llm]')", file=sys.stderr)
        return 2
    try:
        if args.resume:
            summary = resume(args.resume, progress=show_progress(args))
            out = args.resume
        else:
            if args.out is None:
                raise ValueError("out: give --out DIR (or --resume DIR)")
            cfg = get_preset(args.preset, **dataclass_overrides(args, TrainConfig))
            summary = train(cfg, args.out, progress=show_progress(args))
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


TRAIN_GROUPS = {
    "model and prompts": ("model", "chat_template", "max_new_tokens", "temperature", "bf16",
                          "gradient_checkpointing", "device", "threads"),
    "data (a Hugging Face dataset with --dataset, or a JSONL file with --data)": (
        "task", "dataset", "dataset_config", "split", "eval_split", "question_field", "answer_field", "data",
        "eval_data", "n_digits", "little_endian", "fixed_width"),
    "reward": ("reward_mode",),
    "RL": ("method", "staleness", "agg_mode", "mask_scope", "prompts_per_step", "group_size", "updates_per_step",
           "micro_batch_size", "lr", "optimizer", "weight_decay", "max_grad_norm", "updates", "seed"),
    "warm start (the tiny model only)": ("warm_start_steps", "warm_start_lr", "warm_start_marked_frac"),
    "logging and checkpoints": ("eval_every", "eval_prompts", "hist_every", "checkpoint_every", "report_to"),
}
"""``train-llm --help`` sections: every TrainConfig field but the nested loss config (a test checks it)."""


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
    p.add_argument("--no-progress", action="store_true", help="no progress bars (there are none off a terminal either)")
    from .config import TrainConfig  # no transformers import: `m2po-lab --help` works without it

    add_dataclass_options(p, TrainConfig, groups=TRAIN_GROUPS)
    p.set_defaults(func=_cmd_train_llm)


STUDY_PRESET_NAMES = ("tiny-table1", "gpu-table1", "quick")  # kept in sync with study_config.PRESETS (a test checks it)


def _default_workers() -> int:
    import os

    return max(1, min(os.cpu_count() or 1, 8))


def _cmd_study_llm(args: argparse.Namespace) -> int:
    try:
        from m2po_lab.cliutil import dataclass_overrides, show_progress

        from .study import run_study_llm
        from .study_config import LLMStudyConfig, get_preset
    except ImportError as err:  # transformers missing
        print(f"m2po-lab study-llm: error: {err} (pip install 'm2po-lab[llm]')", file=sys.stderr)
        return 2
    progress = show_progress(args)
    try:
        cfg = get_preset(args.preset, **dataclass_overrides(args, LLMStudyConfig))
        workers = _default_workers() if args.workers is None else args.workers
        summary = run_study_llm(cfg, args.out, workers=workers, progress=progress, force=args.force)
    except ValueError as err:  # a bad option or an unusable --out (RunDirError): say so, write nothing
        print(f"m2po-lab study-llm: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a worker process failed: the others' finished runs and checkpoints stay
        print(f"m2po-lab study-llm: error: {err}; the same command resumes the study", file=sys.stderr)
        return 1
    if summary.get("already_finished"):
        print(f"{args.out} holds this study, finished ({summary['wall_s']:.0f} s); nothing to do. --force starts it "
              "over; a new --out runs it elsewhere.")
    else:
        print(f"wrote {args.out}/summary.json, report.md and figures/ ({summary['wall_s']:.0f} s)")
    for row in summary.get("table1", []):
        print(f"  {row['method']:>8s} s={row['staleness']:<4d} final eval/reward {row['final_reward'] or 0:.3f} ± "
              f"{row['final_reward_std'] or 0:.3f}  collapsed {row['collapsed']}/{row['seeds']}")
    for c in summary["phenomena"]:
        mark = {True: "held", False: "NOT held", None: "n/a"}[c["held"]]
        print(f"  {mark:9s} {c['phenomenon']}")
    return 0


def add_study_llm_parser(sub) -> None:
    """Register the ``study-llm`` subcommand on an argparse subparsers object."""
    from m2po_lab.cliutil import add_dataclass_options

    p = sub.add_parser(
        "study-llm",
        help="staleness sweep of the LLM trainer on a tiny transformer (the paper's Table 1 plus no_tr)",
        description="Train one warm start, then every (method, staleness, seed) RL run of the LLM trainer from it, "
        "in parallel processes (one torch thread each), and write a study directory (runs/*, summary.json, "
        "report.md, figures; docs/run_format.md). Interrupted? Run the same command again: finished runs are kept, "
        "the others resume exactly. A finished study is left as it is (--force starts over).",
    )
    p.add_argument("--preset", default="tiny-table1",
                   help=f"one of {', '.join(STUDY_PRESET_NAMES)} (default: tiny-table1)")
    p.add_argument("--out", default="runs/study-llm", help="study directory (default: runs/study-llm)")
    p.add_argument("--workers", type=int, default=None,
                   help="runs trained at once, one process and one torch thread each (default: CPU cores, at most 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal either)")
    p.add_argument("--force", action="store_true", help="start over: remove the study already in --out first")
    from .study_config import LLMStudyConfig  # no transformers import: `m2po-lab --help` works without it

    add_dataclass_options(p, LLMStudyConfig)
    p.set_defaults(func=_cmd_study_llm)


def study_llm_main(argv: list[str] | None = None) -> int:
    """``m2po-lab study-llm ARGS`` as a function (the same parser the ``m2po-lab`` command registers)."""
    parser = argparse.ArgumentParser(prog="m2po-lab")
    add_study_llm_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study-llm", *(argv or [])])
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """``python -m m2po_lab.llm.cli train-llm|study-llm ...``: the ``m2po-lab`` command's parser."""
    from m2po_lab.cli import main as m2po_lab_main

    return m2po_lab_main(argv)


if __name__ == "__main__":
    sys.exit(main())
