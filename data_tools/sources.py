"""Open a source's raw rows (local files, a `datasets` dir, a hub dataset, a builtin generator) and run the
row pass over them, all Arrow-backed: rows are never all held as Python objects.
"""

from __future__ import annotations

import atexit
import codecs
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import pyarrow.compute as pc
from datasets import Dataset, concatenate_datasets, load_dataset, load_from_disk

from data_tools.generators import iter_rows
from data_tools.layouts import detect_layout
from data_tools.process import BLANK, OK, RowProcessor
from data_tools.spec import SourceSpec
from data_tools.text_hashes import hash64
from posttrain.config_files import from_mapping
from posttrain.errors import UserError

# Loader of each file suffix; JSONL is read as text lines so a malformed line is reported (or skipped) by number.
SUFFIXES = {".jsonl": "text", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# Below this many rows the cost of starting workers exceeds what they save.
_MIN_ROWS_PER_WORKER = 5_000


@dataclass
class RawPart:
    """Raw rows of one file (or hub split, or generator run) and what errors call it."""

    origin: str
    dataset: Dataset
    json_lines: bool = False
    error: str | None = None  # a file skipped (on_error skip) because it could not be read


def _expand(source: SourceSpec) -> list[Path]:
    patterns = [source.path] if isinstance(source.path, str) else list(source.path)
    paths: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matched = sorted(glob.glob(pattern))
            if not matched:
                raise UserError(f"{source.where}: path {pattern!r} matches no file")
            paths += [Path(p) for p in matched]
        elif not Path(pattern).exists():
            raise UserError(f"{source.where}: path {os.path.abspath(pattern)}: no such file or directory")
        else:
            paths.append(Path(pattern))
    return paths


def _builtin_rows(task: str, n: int, seed: int, split: str, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    # `Dataset.from_generator` wants a generator function of keyword arguments; the options stay one argument.
    yield from iter_rows(task, n, seed=seed, split=split, **options)


def utf8_error(path: Path, chunk_size: int = 1 << 20) -> str | None:
    """Where a text file stops being UTF-8 (byte offset, line and the offending byte), or None when it is UTF-8.

    >>> path = Path(tempfile.mkdtemp()) / "latin1.jsonl"
    >>> _ = path.write_bytes(b'{"a": 1}\\n{"b": "caf\\xe9"}\\n')
    >>> utf8_error(path)
    'byte 0xe9 at offset 19 (line 2) is not UTF-8'
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    with path.open("rb") as f:
        while True:
            chunk = f.read(chunk_size)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # The error's position is in the decoder's buffered bytes plus this chunk; `offset` counts chunks.
                start = offset + exc.start - len(exc.object) + len(chunk)
                lines += exc.object[: exc.start].count(b"\n")  # buffered bytes are a partial character: no newline
                return f"byte 0x{exc.object[exc.start]:02x} at offset {start} (line {lines}) is not UTF-8"
            if not chunk:
                return None
            lines += chunk.count(b"\n")
            offset += len(chunk)


def _read_failure(source: SourceSpec, path: Path, exc: Exception) -> str:
    """Why `datasets` could not read a file, in words: its own error hides the cause behind a generic message."""
    where = source.where if str(path) in source.where else f"{source.where}: {path}"  # name the file once
    if path.stat().st_size == 0:
        return f"{where}: empty source (no rows); expected at least one row"
    if path.suffix.lower() in (".jsonl", ".json", ".csv"):
        position = utf8_error(path)
        if position is not None:
            return f"{where}: {position}; re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    return f"{source.where}: cannot read {path} as {path.suffix}: {type(cause).__name__}: {cause}"


def open_parts(source: SourceSpec, workdir: str, seed: int, count: int | None, on_error: str = "raise") -> list[RawPart]:
    """The raw parts of a source; `count` is how many rows a builtin generator makes. A file that cannot be read
    (empty, not UTF-8, malformed) raises, or with `on_error="skip"` becomes a part holding only its error."""
    if source.builtin is not None:
        if count is None:
            raise UserError(f"{source.where}: a builtin source needs rows (how many to generate)")
        kwargs = {"task": source.builtin, "n": count, "seed": source.seed if source.seed is not None else seed,
                  "split": source.split or "train", "options": source.options}
        ds = Dataset.from_generator(_builtin_rows, gen_kwargs=kwargs, cache_dir=workdir)
        return [RawPart(f"builtin:{source.builtin}", ds)]
    if source.hub is not None:
        try:
            ds = load_dataset(source.hub, source.subset, split=source.split or "train")
        except Exception as exc:  # noqa: BLE001 - any loading failure is reported with the source named
            raise UserError(f"{source.where}: cannot load hub dataset {source.hub!r}: {exc}") from None
        return [RawPart(source.hub, ds)]
    parts = []
    for path in _expand(source):
        if path.is_dir():
            parts.append(RawPart(str(path), _load_dir(path, source)))
            continue
        loader = SUFFIXES.get(path.suffix.lower())
        if loader is None:
            raise UserError(f"{source.where}: {path}: unsupported file type {path.suffix!r}; expected one of "
                            f"{sorted(SUFFIXES)} or a datasets save_to_disk directory")
        try:
            if path.stat().st_size == 0:  # `datasets` fails on it without saying why
                raise ValueError("empty file")
            ds = load_dataset(loader, data_files=str(path), split="train", cache_dir=workdir)
        except Exception as exc:  # noqa: BLE001 - a parse failure of the whole file, named
            message = _read_failure(source, path, exc)
            if on_error != "skip":
                raise UserError(f"{message} (pass --on_error skip to skip it)") from None
            parts.append(RawPart(str(path), Dataset.from_dict({}), error=message))
            continue
        parts.append(RawPart(str(path), ds, json_lines=loader == "text"))
    return parts


def _load_dir(path: Path, source: SourceSpec) -> Dataset:
    try:
        ds = load_from_disk(str(path))
    except FileNotFoundError:
        raise UserError(f"{source.where}: {path} is a directory but not a datasets save_to_disk dir; give data "
                        "files or a glob instead") from None
    if isinstance(ds, datasets.DatasetDict):
        split = source.split or "train"
        if split not in ds:
            raise UserError(f"{source.where}: split {split!r} is not in {path}; it has {sorted(ds)}")
        ds = ds[split]
    return ds


def resolve_layout(source: SourceSpec, part: RawPart, prompts_only: bool = False) -> str:
    """The source's layout, detected from the first non-blank row's fields when it is `auto`."""
    if source.layout != "auto":
        return source.layout
    if source.builtin is not None:
        return "messages"
    if part.json_lines:
        first = next((line for line in part.dataset["text"][:1000] if line.strip()), None)
        try:
            columns = list(json.loads(first)) if first else []
        except (json.JSONDecodeError, TypeError):
            columns = []
    else:
        columns = part.dataset.column_names
    layout = detect_layout(columns, source.fields, prompts_only)
    if layout is None:
        raise UserError(
            f"{source.where}: {part.origin}: cannot tell the layout from fields {columns[:20]}; expected messages, "
            "conversations (sharegpt), instruction+output (alpaca) or prompt+response, or set `layout` and `fields`"
        )
    return layout


def process_source(
    source: SourceSpec, processor: RowProcessor, workdir: str, seed: int = 0, count: int | None = None,
    num_proc: int | None = None,
) -> Dataset:
    """All rows of a source after the row pass (internal columns included), in file and row order.

    Raises ValueError for a missing path, an unreadable file, an empty source, or (unless `processor.on_error` is
    skip) the first bad row, naming the file, row number and field.
    """
    outputs = []
    tag = hash64(source.name)  # cache file names: a source name may hold any character
    parts = open_parts(source, workdir, seed, count, processor.on_error)
    for n, part in enumerate(parts):
        if part.error is not None:  # one invalid row stands for the file: counted and reported like bad rows
            outputs.append(Dataset.from_dict(processor.failed(part.error), features=processor.features()))
            continue
        # Row numbers restart in each file: ids name the file when there are several.
        prefix = source.name if len(parts) == 1 else f"{source.name}:{Path(part.origin).name}"
        row_pass = replace(processor, origin=part.origin, json_lines=part.json_lines, id_prefix=prefix,
                           layout=resolve_layout(source, part, prompts_only=not processor.require_response))
        workers = min(num_proc or os.cpu_count() or 1, max(1, part.dataset.num_rows // _MIN_ROWS_PER_WORKER))
        outputs.append(part.dataset.map(
            row_pass, batched=True, batch_size=500, with_indices=True, remove_columns=part.dataset.column_names,
            features=row_pass.features(), num_proc=workers if workers > 1 else None,
            cache_file_name=os.path.join(workdir, f"{tag}-{n}.arrow"), new_fingerprint=f"{tag}-{n}", desc=prefix,
        ))
    ds = concatenate_datasets(outputs) if len(outputs) > 1 else outputs[0]
    if not ds.num_rows or pc.all(pc.equal(ds.data.column("_status"), BLANK)).as_py():
        raise UserError(f"{source.where}: empty source (no rows); expected at least one row")
    return ds


def read_source(
    source: SourceSpec | dict[str, Any], on_error: str = "raise", require_response: bool = True, seed: int = 0,
    tokenizer: Any = None,
) -> Dataset:
    """Read any source the mix builder reads into canonical rows (`id`, `domain`, `source`, `messages`, `prompt`,
    `solution`, `tests`, `entry_point`; plus `input_ids`, `assistant_masks`, `num_tokens` with a `tokenizer`).

    `source` is a `SourceSpec` or its YAML mapping; bad and blank rows are dropped (with `on_error="skip"`) or
    raise. Use `require_response=False` for prompt sets (eval, distillation inputs). The rows live in a temporary
    Arrow cache removed when the process exits.

    >>> ds = read_source({"builtin": "arithmetic", "rows": 4, "split": "heldout"})
    >>> ds.num_rows, ds[0]["source"], ds[0]["messages"][0]["role"]
    (4, 'builtin:arithmetic', 'user')
    """
    if isinstance(source, dict):
        source = from_mapping(SourceSpec, source, "source")
    processor = RowProcessor(origin="", source=source.name, domain=source.domain, layout=source.layout,
                             fields=source.fields, json_lines=False, on_error=on_error,
                             require_response=require_response, exact_key=False, tokenizer=tokenizer)
    workdir = tempfile.mkdtemp(prefix="posttrain-read-")
    # The rows stay memory-mapped from here (and later maps cache here) for as long as the process runs.
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    ds = process_source(source, processor, workdir, seed=seed, count=source.rows)
    ds = ds.filter(lambda status: status == OK, input_columns="_status",
                   cache_file_name=os.path.join(workdir, "kept.arrow"))
    return ds.remove_columns([c for c in ds.column_names if c.startswith("_")])
