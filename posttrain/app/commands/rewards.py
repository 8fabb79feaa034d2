"""`posttrain rewards list` and `posttrain rewards check SPEC --input rows.jsonl`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from posttrain.errors import MissingFileError, UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `rewards` group with its `list` and `check` subcommands."""
    group = subparsers.add_parser("rewards", help="List and check reward functions.", description=__doc__)
    sub = group.add_subparsers(dest="action", metavar="{list,check}")
    sub.required = True
    sub.add_parser("list", help="Builtin rewards and installed plugins, one per line.").set_defaults(func=list_command)
    check = sub.add_parser("check", help="Score the rows of a JSONL file; one JSON result per row.")
    check.add_argument("spec", help="A builtin or plugin name, 'module:function', 'file.py:function', or a JSON "
                                    "object such as '{\"name\": \"code\", \"timeout\": 3}'.")
    check.add_argument("--input", required=True, type=Path,
                       help="JSONL rows with 'prompt', 'completion' and the columns the reward needs.")
    check.set_defaults(func=check_command)


def list_command(args: argparse.Namespace) -> int:
    """Print one line per reward: name, origin, and what it scores (or where it lives)."""
    from rewards import list_rewards

    for info in list_rewards():
        print(f"{info.name:<14} {info.origin:<24} {info.summary or info.target}")
    return 0


def parse_reward_spec(text: str) -> str | dict[str, Any]:
    """A command-line spec: JSON when it starts with `{`, else the string itself.

    >>> parse_reward_spec('{"name": "code", "timeout": 3}'), parse_reward_spec("math")
    ({'name': 'code', 'timeout': 3}, 'math')
    """
    if not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"SPEC is not valid JSON ({exc}): {text}") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, each with a `completion`; errors name the file and line."""
    from posttrain.files import RowError, read_jsonl

    try:
        return [row for _, row in read_jsonl(path, required=["completion"])]
    except FileNotFoundError:
        raise MissingFileError(f"--input {path} does not exist") from None
    except RowError as exc:
        if exc.field is None:
            raise
        raise RowError(path, exc.line, "each row needs a 'completion' (and 'prompt' plus the reward's columns)",
                       field="completion") from None


def check_command(args: argparse.Namespace) -> int:
    """Score each row on its own and print `{"row", "reward", "time_s"}` per row, in order; exit 0."""
    from rewards import check_columns, get_reward

    rows = read_rows(args.input)
    reward = get_reward(parse_reward_spec(args.spec))
    check_columns([reward], sorted({column for row in rows for column in row}))
    for index, row in enumerate(rows):
        columns = {k: [v] for k, v in row.items() if k not in ("prompt", "completion")}
        failures = getattr(reward, "stats", None) and reward.stats.failures
        start = time.perf_counter()
        score = reward(prompts=[row.get("prompt")], completions=[row["completion"]], **columns)[0]
        result = {"row": index, "reward": score, "time_s": round(time.perf_counter() - start, 4)}
        if getattr(reward, "stats", None) and reward.stats.failures != failures:
            result["error"] = reward.stats.first_error
        print(json.dumps(result), flush=True)
    return 0
