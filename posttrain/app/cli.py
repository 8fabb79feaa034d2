"""The `posttrain` console script: one subcommand group per package.

Each group lives in `posttrain/app/commands/<name>.py` and exposes `register(subparsers)`; groups are imported
lazily so `posttrain rewards ...` never pays for importing the model code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from posttrain.errors import UserError, report

COMMANDS = {
    "model": "Inspect, create and measure DeepSeek-V3-architecture checkpoints.",
    "rewards": "List and check reward functions.",
    "data": "Build SFT instruction mixes.",
    "distill": "Generate verified R1-style reasoning traces.",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser; only the chosen group's module is imported."""
    parser = argparse.ArgumentParser(prog="posttrain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", metavar="{" + ",".join(COMMANDS) + "}")
    sub.required = True
    chosen = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        if name == chosen:
            importlib.import_module(f"posttrain.app.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse `argv` and run the selected subcommand; a user's mistake is one line on stderr and
    status 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        return report(" ".join(["posttrain", *(word for word in argv[:2] if not word.startswith("-"))]), err)


if __name__ == "__main__":
    sys.exit(main())
