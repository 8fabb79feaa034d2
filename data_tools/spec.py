"""The mix spec: a YAML file listing sources and the cleaning to apply, as validated dataclasses.

Every mistake a user can make in the file is a ValueError naming the file, the source (`sources[2]`) and the
option, and what would be right. Relative paths are taken from the current directory, as the CLI is run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.generators import SPLITS, TASKS, make_config
from data_tools.layouts import FIELDS, LAYOUTS
from posttrain.config_files import from_mapping, read_yaml
from posttrain.errors import UserError


@dataclass
class SourceSpec:
    """One source of rows: exactly one of `path`, `hub`, `builtin`."""

    path: str | list[str] | None = field(
        default=None,
        metadata={"help": "Local .jsonl/.json/.parquet/.csv file(s) or glob(s), or a `datasets.save_to_disk` dir."},
    )
    hub: str | None = field(default=None, metadata={"help": "A dataset name for `datasets.load_dataset` (online)."})
    builtin: str | None = field(default=None, metadata={"help": f"A builtin generator task: {sorted(TASKS)}."})
    name: str | None = field(
        default=None, metadata={"help": "The `source` tag of its rows; default builtin:<task>, the hub name or file."}
    )
    domain: str | None = field(
        default=None, metadata={"help": "Domain tag of its rows (builtin: the task's); required for other sources."}
    )
    rows: int | None = field(default=None, metadata={"help": "Rows to take (after cleaning); default all."})
    weight: float | None = field(default=None, metadata={"help": "Share of the mix's `total_rows` instead of rows."})
    split: str | None = field(default=None, metadata={"help": "Hub split (default train) or builtin split."})
    subset: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    seed: int | None = field(default=None, metadata={"help": "Builtin generator seed; default the mix's seed."})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "Builtin difficulty knobs."})
    layout: str = field(default="auto", metadata={"help": f"auto or one of {list(LAYOUTS)}."})
    fields: dict[str, str] = field(
        default_factory=dict, metadata={"help": f"Layout/canonical field -> the column holding it; keys {FIELDS}."}
    )
    near_dedupe: bool | None = field(
        default=None, metadata={"help": "Near-dedupe this source's rows; default on, off for builtin (templated)."}
    )

    def __post_init__(self) -> None:
        kinds = [k for k in ("path", "hub", "builtin") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise UserError(f"give exactly one of path, hub, builtin (got {kinds or 'none'})")
        if self.builtin is not None:
            if self.builtin not in TASKS:
                raise UserError(f"builtin: unknown task {self.builtin!r}; valid tasks: {sorted(TASKS)}")
            if self.split is not None and self.split not in SPLITS:
                raise UserError(f"split: a builtin split is one of {list(SPLITS)}, got {self.split!r}")
            make_config(self.builtin, self.options)  # unknown or bad knobs fail here, before any work
            self.name = self.name or f"builtin:{self.builtin}"
            self.domain = self.domain or TASKS[self.builtin].domain
            self.near_dedupe = bool(self.near_dedupe)
        else:
            if self.options:
                raise UserError("options: only builtin sources take generator options")
            if self.domain is None and "domain" not in self.fields:
                raise UserError("domain: required (a tag such as math, code, chat), or map a column in fields.domain")
            paths = [self.path] if isinstance(self.path, str) else self.path
            self.name = self.name or self.hub or ",".join(Path(p).name for p in paths)
            self.near_dedupe = True if self.near_dedupe is None else self.near_dedupe
        if self.rows is not None and self.weight is not None:
            raise UserError("give rows or weight, not both")
        if self.rows is not None and (not isinstance(self.rows, int) or self.rows < 1):
            raise UserError(f"rows: expected a whole number >= 1, got {self.rows!r}")
        if self.weight is not None and (not isinstance(self.weight, (int, float)) or self.weight < 0):
            raise UserError(f"weight: expected a number >= 0, got {self.weight!r}")
        if self.layout != "auto" and self.layout not in LAYOUTS:
            raise UserError(f"layout: {self.layout!r} is not auto or one of {list(LAYOUTS)}")
        unknown = sorted(set(self.fields) - set(FIELDS))
        if unknown:
            raise UserError(f"fields: unknown field(s) {unknown}; valid fields: {list(FIELDS)}")

    @property
    def where(self) -> str:
        """How errors name this source: its tag and where its rows come from."""
        origin = self.path if self.path is not None else self.hub if self.hub is not None else "generator"
        return f"source {self.name!r} ({origin})"


@dataclass
class DedupeSpec:
    """Duplicate removal: exact (normalized-text hash) and near (MinHash LSH over word shingles)."""

    exact: bool = field(default=True, metadata={"help": "Drop rows whose normalized text repeats an earlier row."})
    near: bool = field(default=True, metadata={"help": "Drop near-duplicates of earlier rows (sources opting in)."})
    threshold: float = field(default=0.8, metadata={"help": "Jaccard similarity of word-shingle sets at which a row is "
                                                            "a near duplicate of an earlier one."})
    num_perm: int = field(default=64, metadata={"help": "MinHash permutations."})
    shingle: int = field(default=5, metadata={"help": "Words per shingle."})

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise UserError(f"threshold: expected a number between 0 and 1, got {self.threshold}")
        if self.num_perm < 2 or self.shingle < 1:
            raise UserError("num_perm must be >= 2 and shingle >= 1")


@dataclass
class DecontaminateSpec:
    """Drop training rows whose prompt overlaps an evaluation item's prompt in word n-grams (see `EvalNgrams`)."""

    against: list[SourceSpec] = field(
        default_factory=list, metadata={"help": "Evaluation sets, in the same format as sources (rows: all)."}
    )
    ngram: int = field(default=8, metadata={"help": "Words (and symbols) per n-gram; shorter prompts compare whole."})
    min_overlap: float = field(
        default=0.8,
        metadata={"help": "Drop a row whose prompt holds at least this fraction of one eval item's distinctive n-grams."},
    )

    def __post_init__(self) -> None:
        if self.ngram < 1 or not 0 < self.min_overlap <= 1:
            raise UserError("ngram must be >= 1 and min_overlap in (0, 1]")


@dataclass
class MixSpec:
    """A whole mix: sources, cleaning, tokenization and sampling."""

    sources: list[SourceSpec] = field(metadata={"help": "The sources, in the order duplicates are resolved."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling, shuffling and builtin generators."})
    total_rows: int | None = field(default=None, metadata={"help": "Rows shared among sources given by weight."})
    tokenizer: str | None = field(
        default=None, metadata={"help": "Target tokenizer dir (or hub name); default the embedded tiny tokenizer."}
    )
    max_tokens: int | None = field(default=2048, metadata={"help": "Drop rows longer than this many tokens."})
    assistant_masks: bool = field(
        default=True, metadata={"help": "Store `assistant_masks` (assistant-only loss); needs {% generation %}."}
    )
    num_proc: int | None = field(default=None, metadata={"help": "Worker processes; default the CPU count."})
    dedupe: DedupeSpec = field(default_factory=DedupeSpec, metadata={"help": "Duplicate removal."})
    decontaminate: DecontaminateSpec = field(default_factory=DecontaminateSpec, metadata={"help": "Eval overlap."})

    def __post_init__(self) -> None:
        if not self.sources:
            raise UserError("sources: the mix lists no sources; expected at least one")
        names = [s.name for s in self.sources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(f"sources: names {twice} are used twice; give each source a distinct `name`")
        weighted = [s for s in self.sources if s.weight is not None]
        if weighted:
            if self.total_rows is None:
                raise UserError("total_rows: required when a source is given by weight (it shares total_rows)")
            if sum(s.weight for s in weighted) <= 0:
                raise UserError(f"weights: the weights of {[s.name for s in weighted]} sum to zero; give at least "
                                "one a positive weight")
        elif self.total_rows is not None:
            raise UserError("total_rows: only used with weights; give sources a weight or drop total_rows")
        for s in self.sources:
            if s.builtin is not None and s.rows is None and s.weight is None:
                raise UserError(f"{s.where}: a builtin source needs rows or weight (how many to generate)")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(f"max_tokens: expected a number >= 1 or null, got {self.max_tokens}")
        if self.num_proc is not None and self.num_proc < 1:
            raise UserError(f"num_proc: expected a number >= 1 or null, got {self.num_proc}")

    def targets(self) -> list[int | None]:
        """Rows wanted from each source: its `rows`, its share of `total_rows`, or None for all."""
        weighted = sum(s.weight for s in self.sources if s.weight is not None)
        return [s.rows if s.weight is None else round(self.total_rows * s.weight / weighted) for s in self.sources]


def parse_spec(data: Any, where: str = "mix spec") -> MixSpec:
    """A `MixSpec` from a parsed YAML mapping; `where` (the file) prefixes every error.

    >>> spec = parse_spec({"sources": [{"builtin": "arithmetic", "rows": 10}]})
    >>> spec.sources[0].name, spec.sources[0].domain, spec.targets()
    ('builtin:arithmetic', 'math', [10])
    """
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping with `sources`, got {type(data).__name__}")
    data = dict(data)
    raw_sources = data.pop("sources", None)
    if not isinstance(raw_sources, list):
        raise UserError(f"{where}: sources: expected a list of sources, got {type(raw_sources).__name__}")
    sources = [from_mapping(SourceSpec, s, f"{where}: sources[{i}]") for i, s in enumerate(raw_sources)]
    decontaminate = data.pop("decontaminate", None) or {}
    if isinstance(decontaminate, dict):
        against = decontaminate.get("against") or []
        if not isinstance(against, list):
            raise UserError(f"{where}: decontaminate: against: expected a list of sources")
        decontaminate = {**decontaminate, "against": [
            from_mapping(SourceSpec, s, f"{where}: decontaminate: against[{i}]") for i, s in enumerate(against)]}
    return from_mapping(MixSpec, {
        **data,
        "sources": sources,
        "dedupe": from_mapping(DedupeSpec, data.pop("dedupe", None) or {}, f"{where}: dedupe"),
        "decontaminate": from_mapping(DecontaminateSpec, decontaminate, f"{where}: decontaminate"),
    }, where)


def load_spec(path: str | Path) -> MixSpec:
    """Read and validate a mix spec YAML file.

    >>> load_spec("recipes/configs/tiny/mix.yaml").sources[0].builtin
    'arithmetic'
    """
    return parse_spec(read_yaml(path, "mix spec"), str(path))
