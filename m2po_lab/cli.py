"""The ``m2po-lab`` command. Subcommands are thin: they parse, then call the package."""

from __future__ import annotations

import argparse
import sys


def _cmd_losses(args: argparse.Namespace) -> int:
    from .losses import LOSSES

    for name, fn in LOSSES.items():
        summary = (fn.__doc__ or "").strip().splitlines()[0]
        print(f"{name:15s} {summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2po-lab",
        description="M2PO and the losses it is compared with, for RL on LLMs with stale rollouts (arXiv 2510.01161).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("losses", help="list the registered policy losses")
    p.set_defaults(func=_cmd_losses)
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
