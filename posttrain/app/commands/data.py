"""`posttrain data build --config MIX.yaml --output DIR [--on_error skip]`: build an SFT mix."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` group with its `build` subcommand."""
    group = subparsers.add_parser("data", help="Build SFT instruction mixes.", description=__doc__)
    sub = group.add_subparsers(dest="action", metavar="{build}")
    sub.required = True
    build = sub.add_parser("build", help="Build a mix spec into a datasets dir with stats.json and stats.md.")
    build.add_argument("--config", required=True, type=Path, help="The mix spec YAML (see docs/data.md).")
    build.add_argument("--output", required=True, type=Path, help="The dir to write (must not exist).")
    build.add_argument("--on_error", choices=("raise", "skip"), default="raise",
                       help="On a bad row: stop naming its file, row and field (raise), or skip and count it.")
    build.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    build.add_argument("--num_proc", type=int, default=None, help="Worker processes (default: the spec's, or CPUs).")
    build.set_defaults(func=build_command)


def build_command(args: argparse.Namespace) -> int:
    """Build the mix; print where it is and its report. A user's mistake exits 2 with one line on stderr."""
    from data_tools.mix import build_mix

    try:
        stats = build_mix(args.config, args.output, on_error=args.on_error, overwrite=args.overwrite,
                          num_proc=args.num_proc)
    except ValueError as exc:
        print(f"posttrain data build: error: {exc}", file=sys.stderr)
        return 2
    dropped = ", ".join(f"{n} {reason}" for reason, n in stats["dropped"].items() if n) or "none"
    print(f"{args.output}: {stats['rows']} rows from {stats['rows_read']} read in {stats['seconds']} s; "
          f"dropped: {dropped}; report: {args.output / 'stats.md'}")
    return 0
