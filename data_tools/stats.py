"""The mix's report: `stats.json` (machine-readable) and `stats.md` (the same, as tables)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from data_tools.selection import REASONS

PERCENTILES = (50, 90, 95, 99)


def token_summary(lengths: np.ndarray) -> dict[str, float]:
    """Mean, percentiles and max of token lengths.

    >>> token_summary(np.array([1, 2, 3, 4]))["p50"]
    2.5
    """
    if not len(lengths):
        return {}
    summary = {"mean": round(float(lengths.mean()), 1)}
    summary |= {f"p{p}": float(np.percentile(lengths, p)) for p in PERCENTILES}
    return summary | {"max": int(lengths.max())}


def markdown(stats: dict[str, Any]) -> str:
    """`stats.json`'s content as a Markdown report."""
    lines = [f"# Mix: {stats['rows']} rows", "", f"Built {stats['built_at']} in {stats['seconds']} s "
             f"({stats['rows_read']} rows read, {stats['rows_per_second']} rows/s), seed {stats['seed']}, tokenizer "
             f"`{stats['tokenizer']}`.", "", "## Rows per source", "",
             "| source | domain | read | kept after cleaning | target | in mix | " + " | ".join(REASONS) + " |",
             "|---" * (6 + len(REASONS)) + "|"]
    for name, s in stats["sources"].items():
        dropped = " | ".join(str(s["dropped"].get(r, 0)) for r in REASONS)
        target = "all" if s["target"] is None else s["target"]
        lines.append(f"| {name} | {s['domain']} | {s['read']} | {s['kept']} | {target} | {s['rows']} | {dropped} |")
    lines += ["", "## Rows per domain", "", "| domain | rows |", "|---|---|"]
    lines += [f"| {d} | {n} |" for d, n in stats["domains"].items()]
    lines += ["", "## Token lengths", "", "| | mean | " + " | ".join(f"p{p}" for p in PERCENTILES) + " | max |",
              "|---" * (3 + len(PERCENTILES)) + "|"]
    for name, summary in {"all": stats["tokens"], **stats["tokens_per_domain"]}.items():
        if summary:
            lines.append(f"| {name} | " + " | ".join(str(v) for v in summary.values()) + " |")
    lines += ["", "## Dropped rows", ""]
    lines += [f"- {reason}: {n}" for reason, n in stats["dropped"].items()]
    if stats["invalid_examples"]:
        lines += ["", "First invalid rows:", ""] + [f"- {e}" for e in stats["invalid_examples"]]
    if stats["contaminated"]:
        lines += ["", "Contaminated rows by evaluation set (all listed in `decontaminated.jsonl`):", ""]
        lines += [f"- {name}: {n}" for name, n in stats["contaminated"].items()]
    if stats["shortfalls"]:
        lines += ["", "Sources with fewer rows than their target:", ""]
        lines += [f"- {name}: {n} rows short" for name, n in stats["shortfalls"].items()]
    return "\n".join(lines) + "\n"


def count_by(values: list[str]) -> dict[str, int]:
    """Counts of each value, most common first.

    >>> count_by(["a", "b", "a"])
    {'a': 2, 'b': 1}
    """
    return dict(Counter(values).most_common())
