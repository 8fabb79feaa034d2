"""`posttrain distill generate --config CONFIG.yaml [key=value ...]`: verified R1-style traces from a teacher.

Overrides use dotted keys with YAML values, e.g. `teacher.model=outputs/tiny/sft/final sampling.n=8`. Rerunning
the same command after a kill resumes where the samples on disk stop; after a complete run it returns at once.
"""

from __future__ import annotations

import argparse
import json
import logging


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `distill` group with its `generate` subcommand."""
    group = subparsers.add_parser("distill", help="Generate verified R1-style reasoning traces.", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="action", metavar="{generate}")
    sub.required = True
    gen = sub.add_parser("generate", help="Sample, verify, select; write OUTPUT_DIR/selected.jsonl and stats.")
    gen.add_argument("--config", required=True, help="A distillation YAML, or a recipe YAML with a `generation:` map.")
    gen.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                     help="Dotted config keys with YAML values, e.g. sampling.n=8 teacher.backend=openai.")
    gen.add_argument("--json", action="store_true", help="Print the statistics as JSON.")
    gen.set_defaults(func=generate_command)


def generate_command(args: argparse.Namespace) -> int:
    """Run (or resume, or skip) a distillation; print where the rows are and the acceptance figures."""
    from data_tools.distill import load_distill_config, run_distill
    from data_tools.distill.run import stats_markdown

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run_distill(load_distill_config(args.config, args.overrides))
    if args.json:
        print(json.dumps(result.stats, indent=2))
    else:
        print(stats_markdown(result.stats))
        print(("already complete: " if result.skipped else "wrote ") + str(result.data_path))
    return 0
