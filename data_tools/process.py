"""The one pass over raw rows, run by `datasets.map` in worker processes: parse, validate and canonicalize each row,
fingerprint it for cleaning, and tokenize it with the target tokenizer, batch by batch.

Rows that fail keep their place with `_status` holding the error (skip mode) so row numbers stay exact; blank JSONL
lines get `_status == "blank"`; good rows `"ok"`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from datasets import Features, List, Value

from data_tools.layouts import FieldError, canonical_row
from data_tools.text_hashes import (
    NearDuplicateHasher,
    conversation_text,
    hash64,
    ngram_hashes,
    normalize,
    window_hashes,
    words,
)
from posttrain.errors import UserError
from posttrain.files import parse_json_object

OK, BLANK = "ok", "blank"
MESSAGES = List({"role": Value("string"), "content": Value("string")})
CANONICAL_FEATURES = {
    "id": Value("string"),
    "domain": Value("string"),
    "source": Value("string"),
    "messages": MESSAGES,
    "prompt": Value("string"),
    "solution": Value("string"),
    "tests": Value("string"),
    "entry_point": Value("string"),
}
# The rejected answer of a preference row (layout `preference`): canonical rows of that layout only.
PREFERENCE_FEATURES = {"rejected": MESSAGES}
TOKEN_FEATURES = {"input_ids": List(Value("int32")), "assistant_masks": List(Value("int8")), "num_tokens": Value("int32")}
INTERNAL_FEATURES = {
    "_row": Value("int64"),
    "_status": Value("string"),
    "_key": Value("int64"),
    "_bands": List(Value("int64")),
    "_eval": Value("string"),
    "_eval_id": Value("string"),
    "_overlap": Value("float32"),
}


@dataclass
class EvalNgrams:
    """Prompt n-grams of the evaluation sets' items, for decontamination.

    A training prompt overlaps an eval item by the fraction of the item's distinctive n-grams it contains; an
    n-gram found in more than `common` items is template text (every word problem of a template says "How many
    apples does"), not evidence, and is left out. Measuring against one item, not against the union of all items,
    keeps templated sets apart while a prompt that embeds a whole eval question is caught however much text
    surrounds it. Call `freeze()` after the last `add()`.
    """

    ngram: int
    min_overlap: float
    common: int = 5
    owners: dict[int, list[int]] = field(default_factory=dict)  # n-gram hash -> items having it
    short_lengths: set[int] = field(default_factory=set)  # token counts of items shorter than `ngram`
    sizes: list[int] = field(default_factory=list)  # item index -> its distinctive n-grams
    items: list[tuple[str, str]] = field(default_factory=list)  # item index -> (eval set, item id)

    def add(self, eval_set: str, item_id: str, prompt: str) -> None:
        """Register one eval item's prompt."""
        index = len(self.items)
        tokens = words(prompt)
        if len(tokens) < self.ngram:
            # A short item is one n-gram, itself; training prompts are then also cut into windows of its length.
            self.short_lengths.add(len(tokens))
        for gram in set(ngram_hashes(prompt, self.ngram)):
            self.owners.setdefault(gram, []).append(index)
        self.items.append((eval_set, item_id))

    def freeze(self) -> None:
        """Drop the common n-grams and count each item's distinctive ones."""
        self.owners = {g: items for g, items in self.owners.items() if len(items) <= self.common}
        self.sizes = [0] * len(self.items)
        for items in self.owners.values():
            for i in items:
                self.sizes[i] += 1

    def match(self, prompt: str) -> tuple[str | None, str | None, float]:
        """The eval set and item the prompt overlaps most, if by at least `min_overlap`, and that overlap.

        >>> table = EvalNgrams(ngram=3, min_overlap=0.8)
        >>> table.add("heldout", "q1", "What is 12 + 30?")
        >>> table.freeze()
        >>> table.match("Please answer: what is 12 + 30?")
        ('heldout', 'q1', 1.0)
        >>> table.match("What is 12 + 31?")[0] is None
        True
        """
        tokens = words(prompt)
        grams = set(window_hashes(tokens, self.ngram) if len(tokens) >= self.ngram else ngram_hashes(prompt, self.ngram))
        for length in self.short_lengths:
            grams.update(window_hashes(tokens, length))
        hits = Counter(i for g in grams for i in self.owners.get(g, ()))
        if not hits:
            return None, None, 0.0
        item, overlap = max(((i, n / self.sizes[i]) for i, n in hits.items()), key=lambda pair: pair[1])
        if overlap < self.min_overlap:
            return None, None, overlap
        return *self.items[item], overlap


@dataclass
class RowProcessor:
    """Everything one source's rows need to become canonical, fingerprinted, tokenized rows."""

    origin: str  # the file, hub name or generator the rows come from: errors name it
    source: str
    domain: str | None
    layout: str
    fields: dict[str, str]
    json_lines: bool  # raw rows are JSONL text lines in column "text"
    on_error: str = "raise"
    require_response: bool = True
    exact_key: bool = True
    near: NearDuplicateHasher | None = None
    eval_ngrams: EvalNgrams | None = None
    tokenizer: Any = None
    assistant_masks: bool = True
    id_prefix: str | None = None  # rows without an id get `<id_prefix>:<row>`; default the source name

    def features(self) -> Features:
        """The output schema, fixed so every batch and worker writes the same Arrow types."""
        return Features({**self._row_features(), **(TOKEN_FEATURES if self.tokenizer else {}), **INTERNAL_FEATURES})

    def _row_features(self) -> dict[str, Any]:
        return {**CANONICAL_FEATURES, **(PREFERENCE_FEATURES if self.layout == "preference" else {})}

    def _parse(self, batch: dict[str, list], i: int) -> dict[str, Any] | None:
        if not self.json_lines:
            return {k: v[i] for k, v in batch.items()}
        line = batch["text"][i]
        if not line.strip():
            return None
        try:
            return parse_json_object(line)
        except ValueError as exc:
            raise FieldError("<line>", str(exc)) from None

    def _canonical(self, raw: dict[str, Any], row: int) -> dict[str, Any]:
        out = canonical_row(raw, self.layout, self.fields, self.require_response)
        if out["domain"] is None:
            if self.domain is None:
                raise FieldError(self.fields["domain"], "missing; expected a domain tag string")
            out["domain"] = self.domain
        out["id"] = out["id"] or f"{self.id_prefix or self.source}:{row}"
        out["source"] = self.source
        out["prompt"] = "\n\n".join(m["content"] for m in out["messages"] if m["role"] == "user")
        return out

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        """Process one batch (`datasets.map(batched=True, with_indices=True)`)."""
        out: dict[str, list] = {name: [] for name in self.features()}
        good: list[int] = []
        row_features = self._row_features()
        for i, index in enumerate(indices):
            row = index + 1  # 1-based: a JSONL row is its line number, a CSV row excludes the header
            status, canonical = OK, None
            try:
                raw = self._parse(batch, i)
                if raw is None:
                    status = BLANK
                else:
                    canonical = self._canonical(raw, row)
            except FieldError as exc:
                message = f"{self.origin} row {row}, {exc}"
                if self.on_error != "skip":
                    raise UserError(f"{message} (pass --on_error skip to skip and count bad rows)") from None
                status = message
            out["_row"].append(row)
            out["_status"].append(status)
            if canonical is None:
                for name in row_features:
                    out[name].append([] if name in ("messages", "rejected") else None)
            else:
                good.append(i)
                for name in row_features:
                    out[name].append(canonical[name])
        self._fingerprint(out, good, len(indices))
        if self.tokenizer is not None:
            self._tokenize(out, good, len(indices))
        return out

    def failed(self, message: str) -> dict[str, list]:
        """One row holding only an error (a whole file skipped), as a batch of the output schema; row number 0."""
        out: dict[str, list] = {name: [[] if name == "messages" else None] for name in CANONICAL_FEATURES}
        out |= {"_row": [0], "_status": [message]}
        self._fingerprint(out, [], 1)
        if self.tokenizer is not None:
            self._tokenize(out, [], 1)
        return out

    def _fingerprint(self, out: dict[str, list], good: list[int], size: int) -> None:
        out["_key"] = [0] * size
        out["_bands"] = [[] for _ in range(size)]
        out["_eval"] = [None] * size
        out["_eval_id"] = [None] * size
        out["_overlap"] = [0.0] * size
        texts = [conversation_text(out["messages"][i]) for i in good]
        if self.exact_key:
            for i, text in zip(good, texts, strict=True):
                out["_key"][i] = hash64(normalize(text))
        if self.near is not None and good:
            for i, keys in zip(good, self.near.band_keys(texts).tolist(), strict=True):
                out["_bands"][i] = keys
        if self.eval_ngrams is not None:
            for i in good:
                out["_eval"][i], out["_eval_id"][i], out["_overlap"][i] = self.eval_ngrams.match(out["prompt"][i])

    def _tokenize(self, out: dict[str, list], good: list[int], size: int) -> None:
        # One batched call: the chat template renders per row, the fast tokenizer encodes the batch at once.
        out["input_ids"] = [[] for _ in range(size)]
        out["assistant_masks"] = [[] for _ in range(size)]
        out["num_tokens"] = [0] * size
        if not good:
            return
        encoded = self.tokenizer.apply_chat_template(
            [out["messages"][i] for i in good], tokenize=True, return_dict=True,
            return_assistant_tokens_mask=self.assistant_masks,
        )
        for j, i in enumerate(good):
            ids = encoded["input_ids"][j]
            out["input_ids"][i] = ids
            out["num_tokens"][i] = len(ids)
            if self.assistant_masks:
                mask = encoded["assistant_masks"][j]
                if 1 not in mask:
                    raise UserError(
                        f"{self.origin} row {out['_row'][i]}: the tokenizer's chat template marks no assistant "
                        "tokens; it needs {% generation %} markers, or set assistant_masks: false in the mix spec"
                    )
                out["assistant_masks"][i] = mask
