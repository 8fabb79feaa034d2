"""Build an SFT mix from a spec: read every source in one row pass, clean, sample, shuffle, and write a
training-ready `datasets` dir (tokenized with the target tokenizer) plus its report.

Output dir: `save_to_disk` shards with columns `id`, `domain`, `source`, `messages`, `solution`, `tests`,
`entry_point` (None where absent), `input_ids`, `assistant_masks`, `num_tokens`; `stats.json`, `stats.md`,
`decontaminated.jsonl` (the rows dropped for overlapping an evaluation set). The dir is complete or absent: it is
written under a temporary name, fsynced and renamed (`posttrain.files.replacing_dir`), `stats.json` last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, concatenate_datasets, load_from_disk

from data_tools.process import OK, EvalNgrams, RowProcessor
from data_tools.selection import REASONS, Selection, select_rows
from data_tools.sources import process_source
from data_tools.spec import MixSpec, load_spec
from data_tools.stats import count_by, markdown, token_summary
from data_tools.text_hashes import NearDuplicateHasher
from posttrain.errors import UserError
from posttrain.files import replacing_dir

logger = logging.getLogger(__name__)
ON_ERROR = ("raise", "skip")
STATS_FILE = "stats.json"


def _eval_ngrams(spec: MixSpec, workdir: str) -> EvalNgrams | None:
    decon = spec.decontaminate
    if not decon.against:
        return None
    table = EvalNgrams(ngram=decon.ngram, min_overlap=decon.min_overlap)
    for source in decon.against:
        reader = RowProcessor(origin="", source=source.name, domain=source.domain, layout=source.layout,
                              fields=source.fields, json_lines=False, require_response=False, exact_key=False)
        ds = process_source(source, reader, workdir, seed=spec.seed, count=source.rows)
        for batch in ds.select_columns(["id", "prompt", "_status"]).iter(batch_size=10_000):
            for item_id, prompt, status in zip(batch["id"], batch["prompt"], batch["_status"], strict=True):
                if status == OK:
                    table.add(source.name, item_id, prompt)
    table.freeze()
    return table


def build_mix(spec: MixSpec | str | Path, output: str | Path, on_error: str = "raise", overwrite: bool = False,
              num_proc: int | None = None) -> dict[str, Any]:
    """Build the mix described by `spec` (a `MixSpec` or a YAML path) into the dir `output`; returns the stats.

    `on_error="skip"` skips and counts bad rows instead of stopping at the first; `num_proc` overrides the spec's.

    >>> import tempfile
    >>> out = tempfile.mkdtemp() + "/mix"
    >>> stats = build_mix("recipes/configs/examples/mix_sources.yaml", out)
    >>> load_mix(out).num_rows == stats["rows"] > 0
    True
    """
    started = time.time()
    if on_error not in ON_ERROR:
        raise UserError(f"--on_error: expected one of {list(ON_ERROR)}, got {on_error!r}")
    spec_sha256 = None
    if isinstance(spec, (str, Path)):
        spec, spec_sha256 = load_spec(spec), hashlib.sha256(Path(spec).read_bytes()).hexdigest()
    output = Path(output)
    if output.exists() and not overwrite:
        raise UserError(f"--output {output}: already exists; pass --overwrite to replace it")
    num_proc = num_proc or spec.num_proc or os.cpu_count() or 1
    if num_proc > 1:
        # Workers tokenize one batch each on their own core; Rust threads inside them would only contend.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from posttrain.model.io import load_tokenizer  # here: importing the model code costs seconds

    tokenizer = load_tokenizer(spec.tokenizer)
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f".{output.name}.work-", dir=output.parent)
    try:
        logger.info("tokenizer ready after %.1f s", time.time() - started)
        eval_ngrams = _eval_ngrams(spec, workdir)
        logger.info("eval n-grams ready after %.1f s", time.time() - started)
        hasher = None
        if spec.dedupe.near and any(s.near_dedupe for s in spec.sources):
            hasher = NearDuplicateHasher(spec.dedupe.threshold, spec.dedupe.num_perm, spec.dedupe.shingle)
        targets = spec.targets()
        parts = []
        for source, target in zip(spec.sources, targets, strict=True):
            processor = RowProcessor(
                origin="", source=source.name, domain=source.domain, layout=source.layout, fields=source.fields,
                json_lines=False, on_error=on_error, exact_key=spec.dedupe.exact,
                near=hasher if source.near_dedupe else None, eval_ngrams=eval_ngrams, tokenizer=tokenizer,
                assistant_masks=spec.assistant_masks,
            )
            parts.append(process_source(source, processor, workdir, seed=spec.seed, count=target, num_proc=num_proc))
            logger.info("%s: %d rows processed after %.1f s", source.name, parts[-1].num_rows, time.time() - started)
        rows = concatenate_datasets(parts)
        selection = select_rows(rows.data, [p.num_rows for p in parts], targets, spec.max_tokens, spec.seed,
                                exact=spec.dedupe.exact, near=hasher)
        logger.info("selection done after %.1f s", time.time() - started)
        mix = rows.select(selection.order)
        mix = mix.remove_columns([c for c in mix.column_names if c.startswith("_") or c == "prompt"]
                                 + ([] if spec.assistant_masks else ["assistant_masks"]))
        with replacing_dir(output) as staging:
            # One process: datasets saves with a "spawn" pool, whose start-up (re-importing everything) costs more
            # than writing Arrow batches.
            mix.save_to_disk(str(staging))
            logger.info("saved after %.1f s", time.time() - started)
            _write_decontaminated(rows, selection, staging / "decontaminated.jsonl")
            stats = _stats(spec, rows, selection, targets, tokenizer, started) | {"spec_sha256": spec_sha256,
                                                                                 "spec": dataclasses.asdict(spec)}
            (staging / "stats.md").write_text(markdown(stats))
            (staging / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    logger.info("mix: %d rows in %s (%.1f s)", stats["rows"], output, stats["seconds"])
    return stats


def _write_decontaminated(rows: Dataset, selection: Selection, path: Path) -> None:
    dropped = np.flatnonzero(selection.reason == REASONS.index("contaminated"))
    with path.open("w") as f:
        if len(dropped):
            columns = ["id", "source", "_row", "_eval", "_eval_id", "_overlap", "prompt"]
            for row in rows.select(dropped).select_columns(columns):
                f.write(json.dumps({"id": row["id"], "source": row["source"], "row": row["_row"],
                                    "eval_set": row["_eval"], "eval_id": row["_eval_id"],
                                    "overlap": round(row["_overlap"], 3), "prompt": row["prompt"][:300]}) + "\n")


def _stats(spec: MixSpec, rows: Dataset, selection: Selection, targets: list[int | None], tokenizer: Any,
           started: float) -> dict[str, Any]:
    table = rows.data
    order, reason = selection.order, selection.reason
    num_tokens = table.column("num_tokens").to_numpy()
    domains = pc.take(table.column("domain"), order).to_pylist()
    sources: dict[str, Any] = {}
    for i, (source, target) in enumerate(zip(spec.sources, targets, strict=True)):
        mine = selection.source_index == i
        dropped = {r: int(np.sum(mine & (reason == code))) for code, r in enumerate(REASONS)}
        sources[source.name] = {
            "domain": source.domain, "read": int(np.sum(mine & (reason != -2))), "kept": int(np.sum(mine & (reason == -1))),
            "target": target, "rows": int(np.sum(mine & selection.selected)), "dropped": {k: v for k, v in dropped.items() if v},
        }
    invalid = np.flatnonzero(reason == REASONS.index("invalid"))[:20]
    contaminated = np.flatnonzero(reason == REASONS.index("contaminated"))
    seconds = round(time.time() - started, 1)
    read = int(np.sum(reason != -2))
    return {
        "rows": len(order),
        "rows_read": read,
        "seconds": seconds,
        "rows_per_second": round(read / max(seconds, 1e-9)),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": spec.seed,
        "tokenizer": spec.tokenizer or "embedded tiny default",
        "vocab_size": len(tokenizer),
        "sources": sources,
        "domains": count_by(domains),
        "tokens": token_summary(num_tokens[order]),
        "tokens_per_domain": {
            d: token_summary(num_tokens[order][np.asarray(domains) == d]) for d in sorted(set(domains))
        },
        "dropped": {r: int(np.sum(reason == code)) for code, r in enumerate(REASONS)},
        "invalid_examples": pc.take(table.column("_status"), invalid).to_pylist(),
        "contaminated": count_by(pc.take(table.column("_eval"), contaminated).to_pylist()),
        "shortfalls": {name: s["target"] - s["rows"] for name, s in sources.items()
                       if s["target"] is not None and s["rows"] < s["target"]},
    }


def load_mix(path: str | Path) -> Dataset:
    """A built mix, refusing a dir the builder did not finish (no `stats.json`).

    >>> load_mix("/nonexistent")
    Traceback (most recent call last):
    ...
    posttrain.errors.UserError: mix /nonexistent: not a finished mix dir (no stats.json); build it with ...
    """
    if not (Path(path) / STATS_FILE).is_file():
        raise UserError(f"mix {path}: not a finished mix dir (no {STATS_FILE}); build it with `posttrain data build`")
    return load_from_disk(str(path))
