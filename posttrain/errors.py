"""Mistakes a user can make, and how every entry point reports them: one line naming the option, file, row or field
and what would be right, then exit status 2 (argparse's convention), no traceback.

The packages raise `UserError` (or its kinds `MissingFileError`, `MissingPackageError`) where the cause is the
user's input; anything else is a bug and keeps its traceback. `UserError` is a `ValueError`, and its kinds are also
`FileNotFoundError` and `ImportError`, so code that catches those keeps working. Entry points (the recipes, the
`posttrain` CLI, `eval/run.py`) wrap their work in `exit_on_user_error`; `option` names the option a mistake came
from. A recipe's entry point:

    with exit_on_user_error("recipes/grpo.py"):
        main(*parse_config(parser.parse_args_and_config))
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
EXIT_STATUS = 2
# Set by a launcher whose child runs under `accelerate launch`, which exits 1 whatever its script's status: `report`
# also writes the error line to this file.
ERROR_FILE_ENV = "POSTTRAIN_ERROR_FILE"


class UserError(ValueError):
    """A mistake in the user's input (an option, a config or data file, a row); its message says where and what
    would be right."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class MissingPackageError(UserError, ImportError):
    """An optional package the chosen option needs is not installed; the message gives the install command."""


@contextmanager
def option(name: str) -> Iterator[None]:
    """Name the option a `UserError` raised inside came from, unless its message starts with the option it names.

    >>> with option("--reward_funcs"):
    ...     raise UserError("unknown reward 'x'")
    Traceback (most recent call last):
    ...
    posttrain.errors.UserError: --reward_funcs: unknown reward 'x'
    """
    try:
        yield
    except UserError as err:
        if not str(err).startswith("--"):
            err.args = (f"{name}: {err}",)  # the same error, so its kind and fields (RowError's line) stay
        raise


def parse_config(parse: Callable[[], T]) -> T:
    """Run a command line / YAML parse (e.g. `TrlParser.parse_args_and_config`); a missing config file and a value
    the config classes reject (their `__post_init__` raises ValueError) are the user's mistakes."""
    try:
        return parse()
    except FileNotFoundError as err:
        raise MissingFileError(f"--config: {err.filename or err}: no such file") from None
    except ValueError as err:
        raise UserError(str(err)) from None


def report(prog: str, err: UserError) -> int:
    """Print `err` as one line on stderr (`<prog>: error: <message>`, argparse's form; a library's message quoted
    in it may span lines); returns the exit status, 2."""
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    line = f"{prog}: error: {message}"
    print(line, file=sys.stderr)
    if path := os.environ.get(ERROR_FILE_ENV):
        tmp = f"{path}.{os.getpid()}"  # each process of a multi-process run writes it whole
        with open(tmp, "w") as f:
            f.write(line)
        os.replace(tmp, path)
    return EXIT_STATUS


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Turn a `UserError` raised inside into its one line (`report`) and exit status 2."""
    try:
        yield
    except UserError as err:
        sys.exit(report(prog, err))

