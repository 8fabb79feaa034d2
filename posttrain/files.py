"""Files written whole or not at all: a checkpoint's index, generated data, reports, plots.

Every writer goes through a temporary sibling that is fsynced and renamed into place, then the directory is
fsynced, so a kill at any moment leaves either the previous file or the new one, never half of one.

>>> path = write_atomic(tmp_path / "stats.json", "{}")  # doctest: +SKIP
>>> with replacing(tmp_path / "plot.png") as tmp:       # doctest: +SKIP
...     fig.savefig(tmp, format="png")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
