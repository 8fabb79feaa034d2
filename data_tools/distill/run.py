"""Orchestration: prompts -> teacher samples -> verification -> append-only store -> selection -> SFT rows.

Layout of `output_dir`:

- `run.json`: the config and its generation fingerprint, written before any sample; a later run with another
  fingerprint (other prompts, teacher, sampling, template or verifiers) refuses the directory.
- `prompts.jsonl`: the prompt rows, frozen at the first run (a resume never re-reads the sources).
- `samples/samples-NNNNN.jsonl`: one record per (prompt id, sample index), appended after verification.
- `selected.jsonl`: the kept rows in the canonical `messages` layout, with `provenance`: what the mix builder and
  the SFT recipe read. `stats.json` / `stats.md`: acceptance per domain and source, rejections, lengths.
- `COMPLETE`: written last; a rerun with the same config (and no failed request to retry) returns at once.

Every file but the shards is written atomically; the shards are append-only (see `shards`). Killing the process
at any moment and running it again yields every (prompt id, sample index) exactly once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.distill.backends import Backend, make_backend
from data_tools.distill.config import DistillConfig
from data_tools.distill.select import Verifier, choose, readability
from data_tools.distill.shards import ShardStore
from posttrain.errors import UserError
from posttrain.files import read_jsonl, write_atomic

logger = logging.getLogger(__name__)

COMPLETE, RUN_FILE, PROMPTS_FILE, SELECTED_FILE = "COMPLETE", "run.json", "prompts.jsonl", "selected.jsonl"
SAMPLES_DIR = "samples"


@dataclass
class DistillResult:
    """What a run produced: `data_path` (the SFT rows), `stats`, and whether generation was skipped as complete."""

    output_dir: Path
    data_path: Path
    stats: dict[str, Any]
    skipped: bool = False


def teacher_messages(messages: list[dict[str, str]], config: DistillConfig) -> list[dict[str, str]]:
    """The conversation the teacher sees: the system prompt (unless the row has one) and the last user turn put
    through `prompt_template`.

    >>> from data_tools.distill.config import parse_config
    >>> cfg = parse_config({"output_dir": "o", "prompts": [{"builtin": "arithmetic"}], "teacher": {"model": "."},
    ...                     "system_prompt": "Think.", "prompt_template": "{prompt} Box it."})
    >>> teacher_messages([{"role": "user", "content": "1+1?"}], cfg)
    [{'role': 'system', 'content': 'Think.'}, {'role': 'user', 'content': '1+1? Box it.'}]
    """
    out = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(out) if m["role"] == "user")
    out[last]["content"] = config.prompt_template.replace("{prompt}", out[last]["content"])
    if config.system_prompt is not None and not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": config.system_prompt})
    return out


def distill_prompts(config: DistillConfig) -> list[dict[str, Any]]:
    """The prompt rows of every source (`data_tools.sources.read_source`), ids unique; the source's own response, if
    any, is kept aside as `original` (DeepSeek-V3's <problem, original response> SFT rows)."""
    from data_tools.sources import read_source

    rows: list[dict[str, Any]] = []
    for number, spec in enumerate(config.prompts):
        try:
            dataset = read_source(spec, require_response=False)
        except ValueError as exc:
            raise UserError(f"prompts[{number}]: {exc}") from None
        for row in dataset:
            messages = list(row["messages"])
            original = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else None
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
            rows.append({
                "id": row["id"], "domain": row["domain"], "source": row["source"], "prompt": row["prompt"],
                "messages": messages, "teacher_messages": teacher_messages(messages, config), "original": original,
                "solution": row["solution"], "tests": row["tests"], "entry_point": row["entry_point"],
            })
    ids = Counter(r["id"] for r in rows)
    twice = sorted(i for i, c in ids.items() if c > 1)
    if twice:
        raise UserError(f"prompts: ids {twice[:5]} occur more than once (samples are keyed by prompt id); give the "
                        "sources distinct `id` columns or remove the duplicate rows")
    return rows


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _selection_fingerprint(config: DistillConfig) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(config.selection), sort_keys=True).encode()).hexdigest()[:16]


def _chunk_seed(base: int, prompt_id: str) -> int:
    return (base * 1_000_003 + int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16)) % 2**31


def prepare_run(config: DistillConfig, out: Path) -> list[dict[str, Any]]:
    """Check or write `run.json`, then read or freeze the prompts."""
    fingerprint = config.generation_fingerprint()
    run_file = out / RUN_FILE
    if run_file.is_file():
        previous = json.loads(run_file.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise UserError(
                f"output_dir {out} holds samples of another config (fingerprint {previous.get('fingerprint')}, now "
                f"{fingerprint}: prompts, teacher, sampling, template or verifiers changed); use a new output_dir or "
                "delete this one"
            )
    else:
        write_atomic(run_file, json.dumps({"fingerprint": fingerprint, "config": config.to_dict()}, indent=2))
    prompts_file = out / PROMPTS_FILE
    if prompts_file.is_file():
        return [row for _, row in read_jsonl(prompts_file)]
    prompts = distill_prompts(config)
    write_atomic(prompts_file, _jsonl(prompts))
    return prompts


def generate_samples(
    config: DistillConfig, prompts: list[dict[str, Any]], verifier: Verifier, backend: Backend | None = None,
    section: str = "teacher",
) -> dict[tuple[str, int], dict[str, Any]]:
    """Generate and verify every missing (prompt id, sample index), appending each round to the store; returns
    all records by key. A record whose request failed (`error`) is tried again. `section` is the config key of the
    model sampled, as errors name it."""
    n = config.sampling.n
    with ShardStore(Path(config.output_dir) / SAMPLES_DIR, config.shard_size) as store:
        done = {key for key, record in store.load().items() if not record.get("error")}
        pending = [(row, [j for j in range(n) if (row["id"], j) not in done]) for row in prompts]
        pending = [(row, missing) for row, missing in pending if missing]
        if pending:
            total = sum(len(m) for _, m in pending)
            logger.info("distill: %d of %d samples to generate (%d prompts)", total, len(prompts) * n, len(pending))
            own = backend is None
            backend = backend or make_backend(config.teacher, config.sampling, section)
            made, start = 0, time.perf_counter()
            try:
                for begin in range(0, len(pending), config.chunk_size):
                    chunk = pending[begin : begin + config.chunk_size]
                    seed = _chunk_seed(config.sampling.seed, chunk[0][0]["id"])
                    generations = backend.generate([row["teacher_messages"] for row, _ in chunk],
                                                   [len(missing) for _, missing in chunk], seed)
                    flat = [(row, j, g) for (row, missing), gens in zip(chunk, generations, strict=True)
                            for j, g in zip(missing, gens, strict=True)]
                    scores = verifier.score([row for row, _, _ in flat], [g.text for _, _, g in flat])
                    store.append([
                        {"prompt_id": row["id"], "sample_index": j, "text": g.text, "num_tokens": g.num_tokens,
                         "truncated": g.truncated, "error": g.error, "seed": seed, "scores": s,
                         "verified": g.error is None and verifier.verdict(s)}
                        for (row, j, g), s in zip(flat, scores, strict=True)
                    ])
                    made += len(flat)
                    rate = made / max(time.perf_counter() - start, 1e-9)
                    logger.info("distill: %d/%d samples (%.2f samples/s)", made, total, rate)
            finally:
                if own:
                    backend.close()
        return store.load()


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {"count": len(values), "mean": round(statistics.fmean(values), 2), "p50": ordered[len(values) // 2],
            "p90": ordered[min(len(values) - 1, int(0.9 * len(values)))], "max": ordered[-1]}


def select_traces(
    config: DistillConfig, prompts: list[dict[str, Any]], records: dict[tuple[str, int], dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The SFT rows the policy keeps, and the run's statistics (pure: the same records give the same rows)."""
    teacher = {"backend": config.teacher.backend, "model": config.teacher.model}
    if config.teacher.base_url:
        teacher["base_url"] = config.teacher.base_url
    sampling = dataclasses.asdict(config.sampling)
    groups = {"domain": defaultdict(Counter), "source": defaultdict(Counter)}
    rejections: Counter = Counter()
    lengths: dict[str, list[int]] = {"samples": [], "verified": [], "kept": []}
    kept_rows: list[dict[str, Any]] = []
    for row in prompts:
        candidates, counts = [], Counter(prompts=1)
        for j in range(config.sampling.n):
            record = records.get((row["id"], j))
            if record is None:
                continue
            counts["samples"] += 1
            size = record.get("num_tokens")
            if size is not None:
                lengths["samples"].append(size)
            if record.get("error"):
                counts["errors"] += 1
                rejections["error"] += 1
                continue
            if not record["verified"]:
                rejections["unverified"] += 1
                continue
            counts["verified"] += 1
            if size is not None:
                lengths["verified"].append(size)
            assistant, reason = readability(record, row["prompt"], config.selection)
            if reason:
                rejections[reason] += 1
                continue
            counts["readable"] += 1
            candidates.append({**record, "assistant": assistant})
        chosen = choose(candidates, config.selection)
        rejections["not_selected"] += len(candidates) - len(chosen)
        counts["kept"] += len(chosen)
        counts["prompts_kept"] += bool(chosen)
        if config.selection.original_responses and row.get("original"):
            counts["originals"] += 1
            kept_rows.append({
                "id": f"{row['id']}#original", "domain": row["domain"], "source": row["source"],
                "messages": [*row["messages"], {"role": "assistant", "content": row["original"]}],
                "solution": row["solution"], "tests": row["tests"], "entry_point": row["entry_point"],
                "provenance": {"prompt_id": row["id"], "verdict": "original"},
            })
        for key in ("domain", "source"):
            groups[key][row[key]].update(counts)
        base = row["teacher_messages"] if config.selection.sft_prompt == "teacher" else row["messages"]
        if config.selection.sft_system_prompt is not None:
            base = [{"role": "system", "content": config.selection.sft_system_prompt},
                    *(m for m in base if m["role"] != "system")]
        for record in chosen:
            if record.get("num_tokens") is not None:
                lengths["kept"].append(record["num_tokens"])
            kept_rows.append({
                "id": f"{row['id']}#{record['sample_index']}", "domain": row["domain"], "source": row["source"],
                "messages": [*base, {"role": "assistant", "content": record["assistant"]}],
                "solution": row["solution"], "tests": row["tests"], "entry_point": row["entry_point"],
                "provenance": {
                    "prompt_id": row["id"], "sample_index": record["sample_index"], "teacher": teacher,
                    "sampling": sampling, "seed": record.get("seed"), "verifiers": record["scores"],
                    "verdict": "verified", "min_score": config.verify.min_score, "num_tokens": record["num_tokens"],
                    "policy": config.selection.policy,
                },
            })
    stats = {
        "prompts": len(prompts), "samples": sum(g["samples"] for g in groups["domain"].values()),
        "verified": sum(g["verified"] for g in groups["domain"].values()),
        "kept": sum(g["kept"] for g in groups["domain"].values()),
        "originals": sum(g["originals"] for g in groups["domain"].values()),
        "errors": sum(g["errors"] for g in groups["domain"].values()),
        "by_domain": {k: _rates(v) for k, v in sorted(groups["domain"].items())},
        "by_source": {k: _rates(v) for k, v in sorted(groups["source"].items())},
        "rejections": dict(sorted(rejections.items())),
        "lengths_tokens": {k: _summary(v) for k, v in lengths.items()},
        "teacher": teacher, "sampling": sampling, "verifiers": config.verify.rewards,
        "selection": dataclasses.asdict(config.selection),
    }
    stats["acceptance_rate"] = round(stats["verified"] / stats["samples"], 4) if stats["samples"] else 0.0
    return kept_rows, stats


def _rates(counts: Counter) -> dict[str, Any]:
    out = {k: counts.get(k, 0) for k in ("prompts", "samples", "errors", "verified", "readable", "kept",
                                          "prompts_kept", "originals")}
    out["acceptance_rate"] = round(out["verified"] / out["samples"], 4) if out["samples"] else 0.0
    out["prompt_yield"] = round(out["prompts_kept"] / out["prompts"], 4) if out["prompts"] else 0.0
    return out


def stats_markdown(stats: dict[str, Any]) -> str:
    """A human summary of `stats.json`."""
    lines = [f"# Distillation: {stats['teacher']['model']} ({stats['teacher']['backend']})", "",
             f"{stats['prompts']} prompts, {stats['samples']} samples, {stats['verified']} verified "
             f"({stats['acceptance_rate']:.1%}), {stats['kept']} kept, {stats['errors']} failed requests"
             + (f"; {stats['originals']} rows of the prompts' original responses." if stats["originals"] else "."), ""]
    for key in ("by_domain", "by_source"):
        lines += [f"| {key[3:]} | prompts | samples | verified | acceptance | readable | kept | prompts kept |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in stats[key].items():
            lines.append(f"| {name} | {r['prompts']} | {r['samples']} | {r['verified']} | {r['acceptance_rate']:.1%} "
                         f"| {r['readable']} | {r['kept']} | {r['prompts_kept']} |")
        lines.append("")
    lines += ["Rejections: " + (", ".join(f"{k} {v}" for k, v in stats["rejections"].items()) or "none"), "",
              "Lengths (tokens): " + "; ".join(f"{k}: " + ", ".join(f"{a} {b}" for a, b in v.items())
                                               for k, v in stats["lengths_tokens"].items()), ""]
    return "\n".join(lines)


def run_distill(
    config: DistillConfig, backend: Backend | None = None, log: Callable[[str], None] | None = None,
) -> DistillResult:
    """Generate, verify, select and write a distillation run; resumable, and skipped when already complete.

    `backend` replaces the configured teacher (tests use a scripted one); it is not closed here.
    """
    out = Path(config.output_dir)
    marker = out / COMPLETE
    fingerprint, selection = config.generation_fingerprint(), _selection_fingerprint(config)
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("fingerprint") == fingerprint and info.get("selection") == selection and not info.get("errors"):
            stats = json.loads((out / "stats.json").read_text())
            return DistillResult(out, out / SELECTED_FILE, stats, skipped=True)
    prompts = prepare_run(config, out)
    verifier = Verifier(config.verify)
    verifier.check(["prompt", "solution", "tests", "entry_point", "id", "domain", "source"])
    records = generate_samples(config, prompts, verifier, backend)
    rows, stats = select_traces(config, prompts, records)
    marker.unlink(missing_ok=True)
    data_path = write_atomic(out / SELECTED_FILE, _jsonl(rows))
    write_atomic(out / "stats.json", json.dumps(stats, indent=2))
    write_atomic(out / "stats.md", stats_markdown(stats))
    write_atomic(marker, json.dumps({"fingerprint": fingerprint, "selection": selection, "errors": stats["errors"],
                                     "samples": stats["samples"], "kept": stats["kept"]}))
    (log or logger.info)(f"distill: {stats['samples']} samples, {stats['verified']} verified "
                         f"({stats['acceptance_rate']:.1%}), {stats['kept']} kept, {stats['originals']} original "
                         f"responses: {len(rows)} rows in {data_path}")
    return DistillResult(out, data_path, stats)
