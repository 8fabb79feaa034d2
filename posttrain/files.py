"""Files written whole or not at all (a checkpoint, its index, generated data, reports, plots), and JSONL read with
errors that name the file, the line and the field.

Every writer goes through a temporary sibling that is fsynced and renamed into place, then the directory is
fsynced, so a kill at any moment leaves either the previous file or the new one, never half of one.

>>> path = write_atomic(tmp_path / "stats.json", "{}")  # doctest: +SKIP
>>> with replacing(tmp_path / "plot.png") as tmp:       # doctest: +SKIP
...     fig.savefig(tmp, format="png")
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from posttrain.errors import MissingFileError, UserError


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a directory's entries (a new or renamed file's name) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; on success it replaces `path`, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a whole text file (UTF-8) so it is complete or absent; returns its path."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def replacing_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary sibling directory of `path` to fill; on success every file in it is fsynced and it
    replaces `path` (the previous one, if any, is removed after), on an error it is removed.

    `path` is only ever absent, the previous complete directory, or the new complete one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        yield tmp
        for root, _, names in os.walk(tmp):
            for name in names:
                with open(Path(root) / name, "rb") as fh:
                    os.fsync(fh.fileno())
            fsync_dir(root)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_json_object(line: str) -> dict[str, Any]:
    """One JSONL line as a dict; a ValueError says what is wrong with it (the caller names the file and line).

    >>> parse_json_object('{"prompt": "2+2?"}')
    {'prompt': '2+2?'}
    >>> parse_json_object('[1, 2]')
    Traceback (most recent call last):
    ...
    ValueError: expected a JSON object, got list
    """
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg} at column {err.colno}); expected one object per line") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    return row


class RowError(UserError):
    """A bad row of a data file; the message names the file, the line and, where one is at fault, the field."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str, field: str | None = None) -> None:
        self.path, self.line, self.field = Path(path), line, field
        super().__init__(f"{path} row {line}: " + (f"field {field!r}: " if field else "") + problem)


def read_jsonl(
    path: str | os.PathLike, required: Sequence[str] = (), *, torn_tail: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file (`.gz` too).

    A missing file is a FileNotFoundError; a line that is not UTF-8 or not a JSON object, or lacks a `required`
    field, is a `RowError` naming the file, the line and the field. `torn_tail=True` stops at a last line without its newline
    (a writer may be at work on it) instead of reading it.

    >>> import tempfile
    >>> path = write_atomic(Path(tempfile.mkdtemp()) / "rows.jsonl", '{"prompt": "2+2?"}\\n\\n{"id": 3}\\n')
    >>> next(read_jsonl(path))
    (1, {'prompt': '2+2?'})
    >>> list(read_jsonl(path, required=["prompt"]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    posttrain.files.RowError: /.../rows.jsonl row 3: field 'prompt': missing; the row has fields ['id']
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if torn_tail and not raw.endswith(b"\n"):
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise RowError(path, number, f"byte 0x{raw[err.start]:02x} at column {err.start + 1} is not UTF-8; "
                               "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
            if not line.strip():
                continue
            try:
                row = parse_json_object(line)
            except ValueError as err:
                raise RowError(path, number, str(err)) from None
            for name in required:
                if name not in row:
                    raise RowError(path, number, f"missing; the row has fields {sorted(row)}", field=name)
            yield number, row
