"""`posttrain data build --config MIX.yaml --output DIR [--on_error skip]`: build an SFT mix.
`posttrain data preferences --config PREFS.yaml [key=value ...]`: preference pairs from a policy's verified samples.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` group with its `build` subcommand."""
    group = subparsers.add_parser("data", help="Build SFT instruction mixes.", description=__doc__)
    sub = group.add_subparsers(dest="action", metavar="{build,preferences}")
    sub.required = True
    build = sub.add_parser("build", help="Build a mix spec into a datasets dir with stats.json and stats.md.")
    build.add_argument("--config", required=True, type=Path, help="The mix spec YAML (see docs/data.md).")
    build.add_argument("--output", required=True, type=Path, help="The dir to write (must not exist).")
    build.add_argument("--on_error", choices=("raise", "skip"), default="raise",
                       help="On a bad row: stop naming its file, row and field (raise), or skip and count it.")
    build.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    build.add_argument("--num_proc", type=int, default=None, help="Worker processes (default: the spec's, or CPUs).")
    build.set_defaults(func=build_command)
    prefs = sub.add_parser("preferences", help="Sample a policy n times per prompt, verify, pair correct with incorrect "
                           "samples: OUTPUT_DIR/train.jsonl, heldout.jsonl and stats (resumable).")
    prefs.add_argument("--config", required=True, help="The preference YAML (recipes/configs/tiny/preferences.yaml).")
    prefs.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="Dotted config keys with YAML values, e.g. sampling.n=8 policy.model=path.")
    prefs.set_defaults(func=preferences_command)


def build_command(args: argparse.Namespace) -> int:
    """Build the mix; print where it is and its report."""
    from data_tools.mix import build_mix

    stats = build_mix(args.config, args.output, on_error=args.on_error, overwrite=args.overwrite,
                      num_proc=args.num_proc)
    dropped = ", ".join(f"{n} {reason}" for reason, n in stats["dropped"].items() if n) or "none"
    print(f"{args.output}: {stats['rows']} rows from {stats['rows_read']} read in {stats['seconds']} s; "
          f"dropped: {dropped}; report: {args.output / 'stats.md'}")
    return 0


def preferences_command(args: argparse.Namespace) -> int:
    """Build (or resume, or skip) preference pairs; print the stats."""
    from data_tools.preferences import load_preference_config, run_preferences, stats_markdown

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = load_preference_config(args.config, args.overrides)
    stats = run_preferences(config)
    print(stats_markdown(stats))
    print(f"wrote {Path(config.output_dir) / 'train.jsonl'} and heldout.jsonl")
    return 0
