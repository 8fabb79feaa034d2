"""Verification (through `rewards`), readability filters, rejection sampling and the SFT row format.

A sample is kept when (1) every verifier that applies to its row scores it at least `min_score` (and one applies),
(2) it passes the readability filters: one balanced `<think>...</think>` opening the text with a non-empty answer
after it, not cut at `max_new_tokens`, at most `max_tokens` long, no language mixing; and (3) the selection policy
picks it among its prompt's survivors: the shortest one, or all of them up to `k`.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from data_tools.distill.config import SelectionConfig, VerifyConfig
from rewards.think_format import format_trace, split_think

# Scripts that may appear in any language's math (pi, theta): never counted as mixing.
_NEUTRAL_SCRIPTS = {"GREEK"}
_SCRIPT_ALIASES = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK", "CJK": "CJK"}


class Verifier:
    """The configured rewards, scoring samples of prompt rows."""

    def __init__(self, config: VerifyConfig) -> None:
        from rewards import get_reward

        self.config = config
        self.funcs = [get_reward(spec) for spec in config.rewards]

    @property
    def names(self) -> list[str]:
        """The verifiers' names, as scores are recorded."""
        return [f.__name__ for f in self.funcs]

    def check(self, columns: Sequence[str]) -> None:
        """Raise ValueError before any generation when a verifier's column is missing from the prompts."""
        from rewards import check_columns

        check_columns(self.funcs, columns)

    def score(self, rows: Sequence[dict[str, Any]], texts: Sequence[str | None]) -> list[dict[str, float | None]]:
        """Each verifier's score of each (row, text); a failed request (text None) is scored by none."""
        live = [i for i, t in enumerate(texts) if t is not None]
        scores: list[dict[str, float | None]] = [{} for _ in texts]
        if not live:
            return scores
        columns = {c: [rows[i].get(c) for i in live] for c in ("solution", "tests", "entry_point", "id", "domain",
                                                                 "source")}
        prompts = [rows[i].get("prompt") for i in live]
        for func in self.funcs:
            values = func(prompts=prompts, completions=[texts[i] for i in live], **columns)
            for i, value in zip(live, values, strict=True):
                scores[i][func.__name__] = None if value is None else float(value)
        return scores

    def verdict(self, scores: dict[str, float | None]) -> bool:
        """Verified: at least one verifier applies and all that apply give `min_score` or more.

        >>> verifier = Verifier(VerifyConfig(rewards=["math", "code"]))
        >>> verifier.verdict({"math": 1.0, "code": None}), verifier.verdict({"math": 0.0}), verifier.verdict({})
        (True, False, False)
        """
        applied = [s for s in scores.values() if s is not None]
        return bool(applied) and all(s >= self.config.min_score for s in applied)


def _script(ch: str) -> str | None:
    if not ch.isalpha():
        return None
    try:
        word = unicodedata.name(ch).split()[0]
    except ValueError:
        return None
    return _SCRIPT_ALIASES.get(word, word)


def dominant_script(text: str) -> str:
    """The script most letters of `text` are in (LATIN when it has none).

    >>> dominant_script("What is 2+2?"), dominant_script("2加2等于几？")
    ('LATIN', 'CJK')
    """
    counts: dict[str, int] = {}
    for ch in text:
        script = _script(ch)
        if script and script not in _NEUTRAL_SCRIPTS:
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.get) if counts else "LATIN"


def foreign_share(text: str, script: str) -> float:
    """Share of the letters of `text` outside `script` (Greek letters never count).

    >>> foreign_share("the sum is 4", "LATIN"), round(foreign_share("the sum 是 4", "LATIN"), 2)
    (0.0, 0.14)
    """
    letters = foreign = 0
    for ch in text:
        found = _script(ch)
        if found is None or found in _NEUTRAL_SCRIPTS:
            continue
        letters += 1
        foreign += found != script
    return foreign / letters if letters else 0.0


def readability(record: dict[str, Any], prompt_text: str, config: SelectionConfig) -> tuple[str | None, str | None]:
    """(the SFT assistant text, None) when a verified sample is readable, else (None, the reason it is not).

    Reasons: `truncated`, `too_long`, `unbalanced_think` (or no answer after it), `language_mixing`.
    """
    text = record.get("text") or ""
    if record.get("truncated") and config.drop_truncated:
        return None, "truncated"
    tokens = record.get("num_tokens")
    if config.max_tokens is not None and (tokens if tokens is not None else len(text)) > config.max_tokens:
        return None, "too_long"
    parts = split_think(text, config.think_in_prompt)
    if parts is None:
        if config.require_think:
            return None, "unbalanced_think"
        if not text.strip():
            return None, "empty"
        assistant = text.strip()
    else:
        assistant = format_trace(*parts)
    if foreign_share(assistant, dominant_script(prompt_text)) > config.max_foreign_script:
        return None, "language_mixing"
    return assistant, None


def choose(candidates: list[dict[str, Any]], config: SelectionConfig) -> list[dict[str, Any]]:
    """The samples of one prompt the policy keeps, from its verified and readable ones (each with `assistant`).

    `shortest`: the one with the fewest tokens (characters when the backend gave no count; then the lowest
    sample index). `all`: all of them in sample order, up to `k`. `majority`: the completion the teacher gave
    most often among the correct ones (an answer can verify while its working is wrong; the modal trace rarely is).
    With `dedupe`, identical texts count once.

    >>> rows = [{"sample_index": i, "assistant": t, "num_tokens": len(t)} for i, t in enumerate(["ccc", "a", "a"])]
    >>> [r["sample_index"] for r in choose(rows, SelectionConfig(policy="all"))]
    [0, 1]
    >>> [r["sample_index"] for r in choose(rows, SelectionConfig(policy="shortest"))]
    [1]
    >>> [r["sample_index"] for r in choose(rows, SelectionConfig(policy="majority"))]
    [1]
    """
    ordered = sorted(candidates, key=lambda r: r["sample_index"])
    if config.policy == "majority":
        counts = Counter(r["assistant"] for r in ordered)
        return [max(ordered, key=lambda r: (counts[r["assistant"]], -r["sample_index"]))] if ordered else []
    if config.dedupe:
        seen: set[str] = set()
        unique = []
        for row in ordered:
            if row["assistant"] not in seen:
                seen.add(row["assistant"])
                unique.append(row)
        ordered = unique
    if config.policy == "shortest":
        def length(r: dict[str, Any]) -> tuple[int, int]:
            n = r.get("num_tokens")
            return (n if n is not None else len(r["assistant"]), r["sample_index"])

        return sorted(ordered, key=length)[:1]
    return ordered[: config.k]
