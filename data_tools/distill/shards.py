"""A crash-safe, append-only store of sample records: sharded JSONL, each record keyed by (prompt id, sample index).

Guarantees (for one writer; a lock file refuses a second one):

- A batch of records is appended with one `write`, then flushed and fsynced: once `append` returns, the records
  survive a kill or power loss.
- A kill in the middle of a write leaves at most one torn line at the end of the last shard; opening the store
  cuts it off, so those records count as not generated and are made again.
- Reading keeps the first record of each key, except that a record with an `error` is replaced by a later one
  without (failed requests are retried on the next run). So a key is never counted twice.

Not covered: a disk that silently corrupts lines in the middle of a shard (reported as an error naming the line).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.files import RowError, fsync_dir, read_jsonl

Key = tuple[str, int]
SHARD_GLOB = "samples-*.jsonl"


def record_key(record: dict[str, Any]) -> Key:
    """The key of a sample record.

    >>> record_key({"prompt_id": "arithmetic-1", "sample_index": 3})
    ('arithmetic-1', 3)
    """
    return str(record["prompt_id"]), int(record["sample_index"])


class ShardStore:
    """The records of one run in `directory/samples-NNNNN.jsonl`, at most `shard_size` records per shard."""

    def __init__(self, directory: str | os.PathLike, shard_size: int = 10_000) -> None:
        self.directory = Path(directory)
        self.shard_size = shard_size
        self._lock_fd: int | None = None
        self._shard_index = 0
        self._shard_lines = 0

    def shards(self) -> list[Path]:
        """The shard files, in order."""
        return sorted(self.directory.glob(SHARD_GLOB))

    def open(self) -> ShardStore:
        """Take the writer lock, cut a torn last line, and position appends after the last record."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{self.directory}: another distillation run is writing here; wait for it or use "
                               "another output_dir") from None
        self._lock_fd = fd
        shards = self.shards()
        for shard in shards:
            _cut_torn_tail(shard)
        if shards:
            last = shards[-1]
            self._shard_index = int(last.stem.split("-")[-1])
            self._shard_lines = sum(1 for _ in last.open("rb"))
        return self

    def close(self) -> None:
        """Release the writer lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ShardStore:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append records durably (one write and fsync per shard touched); returns how many were written."""
        if self._lock_fd is None:
            raise RuntimeError("ShardStore.append before open(): use `with ShardStore(dir) as store:`")
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
        written = 0
        while written < len(lines):
            if self._shard_lines >= self.shard_size:
                self._shard_index += 1
                self._shard_lines = 0
            room = self.shard_size - self._shard_lines
            chunk = lines[written : written + room]
            path = self.directory / f"samples-{self._shard_index:05d}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, "".join(chunk).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            if self._shard_lines == 0:
                fsync_dir(self.directory)  # the new shard's name is durable too
            self._shard_lines += len(chunk)
            written += len(chunk)
        return written

    def iter_raw(self) -> Iterator[dict[str, Any]]:
        """Every complete record on disk, in write order, duplicates included (a torn last line is skipped)."""
        for shard in self.shards():
            try:
                yield from (record for _, record in read_jsonl(shard, torn_tail=True))
            except RowError as exc:
                raise UserError(f"{exc}: a corrupt sample record; remove the line or the output_dir to "
                                "regenerate") from None

    def load(self) -> dict[Key, dict[str, Any]]:
        """One record per key: the first one, or the first one without an `error` when an earlier one failed."""
        records: dict[Key, dict[str, Any]] = {}
        for record in self.iter_raw():
            key = record_key(record)
            if key not in records or (records[key].get("error") and not record.get("error")):
                records[key] = record
        return records


def _cut_torn_tail(path: Path) -> None:
    """Truncate a shard after its last newline (a write cut short by a kill)."""
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        block = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            data = fh.read(end - start)
            cut = data.rfind(b"\n")
            if cut >= 0:
                fh.truncate(start + cut + 1)
                break
            end = start
        else:
            fh.truncate(0)
        fh.flush()
        os.fsync(fh.fileno())
