"""The ``m2po-lab`` command. Subcommands are thin: they parse, then call the package."""

from __future__ import annotations

import argparse
import sys


def _cmd_losses(args: argparse.Namespace) -> int:
    from .losses import REGISTRY

    for name, entry in REGISTRY.items():
        tags = ", ".join(t for t, on in (("mini-batch state", entry.batch_state is not None),
                                         ("proximal policy", entry.proximal)) if on)
        print(f"{name:15s} {entry.doc.split('. ')[0].rstrip('.')}" + (f"  [{tags}]" if tags else ""))
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from .cliutil import dataclass_overrides, show_progress
    from .study import StudyConfig, get_preset, run_study

    try:
        cfg = get_preset(args.preset, **dataclass_overrides(args, StudyConfig))
        summary = run_study(cfg, args.out, progress=show_progress(args), threads=args.threads, force=args.force)
    except ValueError as e:  # a bad option or an unusable --out (RunDirError): say so, write nothing
        print(f"m2po-lab study: error: {e}", file=sys.stderr)
        return 2
    if summary.get("already_finished"):
        print(f"{args.out} holds this study, finished ({summary['wall_s']:.0f} s); nothing to do. --force starts "
              "it over; a new --out runs it elsewhere.")
    else:
        print(f"wrote {args.out}/summary.json, report.md and figures/ ({summary['wall_s']:.0f} s)")
    for c in summary["phenomena"]:
        mark = {True: "held", False: "NOT held", None: "n/a"}[c["held"]]
        print(f"  {mark:9s} {c['phenomenon']}")
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    from .explorer.launcher import launch

    try:
        return launch(args.port, address=args.address, headless=not args.open, runs_root=args.runs_root)
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as e:
        print(f"m2po-lab app: error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2po-lab",
        description="M2PO and the losses it is compared with, for RL on LLMs with stale rollouts (arXiv 2510.01161).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("losses", help="list the registered policy losses")
    p.set_defaults(func=_cmd_losses)

    from .cliutil import add_dataclass_options
    from .study.config import PRESETS, StudyConfig

    p = sub.add_parser(
        "study",
        help="run the toy staleness study (methods x staleness x seeds, batched) and write its report",
        description="Train every (method, staleness, seed) run on the forking toy task at once and write "
        "metrics.jsonl per run, summary.json, report.md and figures to --out. Interrupted? Run the same "
        "command again: it resumes exactly from the last checkpoint. A finished study is left as it is "
        "(--force starts over).",
    )
    p.add_argument("--preset", default="default", help=f"one of {sorted(PRESETS)} (default: default)")
    p.add_argument("--out", default="runs/study", help="output directory (default: runs/study)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for tiny tensors)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal either)")
    p.add_argument("--force", action="store_true", help="start over: remove the study already in --out first")
    add_dataclass_options(p, StudyConfig)
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("app", help="open the Streamlit explorer (binds to 127.0.0.1 unless --address)")
    p.add_argument("--port", type=int, default=None, help="port (default: streamlit's, 8501)")
    p.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--open", action="store_true", help="also open a browser window (default: only print the URL)")
    p.add_argument("--runs-root", default=None, metavar="DIR",
                   help="the explorer reads run directories below DIR only (default: the current directory)")
    p.set_defaults(func=_cmd_app)
    from .llm.cli import add_study_llm_parser, add_train_llm_parser  # imports no transformers until run
    from .study.window import add_window_parser
    from .systems.cli import add_systems_parser, add_wallclock_parser  # imports no SimPy until the command runs

    add_train_llm_parser(sub)
    add_study_llm_parser(sub)
    add_systems_parser(sub)
    add_wallclock_parser(sub)
    add_window_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
