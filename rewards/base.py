"""The reward base class: TRL's call signature, column checks, and failure isolation.

Every builtin subclasses `Reward`. A subclass declares `required_columns` and implements `score_batch`, returning
one `float | None` per row or an exception instance for a row it could not score; the base class turns those
exceptions into the configured `fallback`, counts them in `stats`, and logs the first message, so a reward that
raises never stops training.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from posttrain.errors import UserError

logger = logging.getLogger(__name__)

Score = float | None
# What `score_batch` returns: a score per row, or the exception that row failed with.
RowScores = list[Score | BaseException]


def completion_text(completion: Any) -> str:
    """Return the text of a completion given as a string or as a list of chat messages.

    >>> completion_text("42")
    '42'
    >>> completion_text([{"role": "assistant", "content": "The answer is 42."}])
    'The answer is 42.'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and all(isinstance(m, dict) for m in completion):
        # A conversational completion: the assistant turns, in order (TRL gives one message).
        return "".join(str(m.get("content") or "") for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


@dataclass
class RewardStats:
    """Counts of a reward's scored rows and failed ones (raised or timed out), with the first failure message."""

    rows: int = 0
    failures: int = 0
    first_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, rows: int, errors: Sequence[BaseException]) -> bool:
        """Add one batch's row count and failures; True when this batch brought the first failure."""
        with self._lock:
            self.rows += rows
            self.failures += len(errors)
            if errors and self.first_error is None:
                self.first_error = f"{type(errors[0]).__name__}: {errors[0]}"
                return True
        return False

    def __getstate__(self) -> dict[str, Any]:
        # Locks do not pickle; rewards travel to worker processes (TRL's async rollout, DataLoader workers).
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict, for logging."""
        return {"rows": self.rows, "failures": self.failures, "first_error": self.first_error}


class Reward:
    """Base of every builtin reward: a callable with TRL's reward signature.

    `reward(prompts, completions, **columns) -> list[float | None]`. Subclasses set `name` and
    `required_columns` and implement `score_batch(prompts, texts, rows)`.
    """

    name: ClassVar[str] = "reward"
    required_columns: ClassVar[tuple[str, ...]] = ()
    optional_columns: ClassVar[tuple[str, ...]] = ()
    # The score of a row whose scoring raised or timed out; None lets TRL skip it.
    fallback: Score = None

    def __post_init__(self) -> None:
        # Set on the instance: TRL logs each reward under `reward_func.__name__`.
        self.__name__ = self.name
        self.stats = RewardStats()

    @property
    def failures(self) -> int:
        """How many rows failed (raised or timed out) since this reward was built."""
        return self.stats.failures

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 **columns: Any) -> list[Score]:
        texts = [completion_text(c) for c in completions]
        rows = self._rows(len(texts), columns)
        prompts = list(prompts) if prompts is not None else [None] * len(texts)
        try:
            scores = self.score_batch(prompts, texts, rows)
        except Exception as exc:  # noqa: BLE001 - a failing reward must not stop training
            scores = [exc] * len(texts)
        if len(scores) != len(texts):
            scores = [RuntimeError(f"{len(scores)} scores for {len(texts)} completions")] * len(texts)
        errors = [s for s in scores if isinstance(s, BaseException)]
        if self.stats.record(len(texts), errors):
            logger.warning("reward %r failed on a row (%s); those rows score %r", self.name, self.stats.first_error,
                           self.fallback)
        log_failure_rate(columns.get("log_metric"), self.name, len(errors), len(texts))
        return [self.fallback if isinstance(s, BaseException) else s for s in scores]

    def _rows(self, n: int, columns: dict[str, Any]) -> list[dict[str, Any]]:
        """Split the batch's columns into one dict per row, checking the required ones are present."""
        missing = [c for c in self.required_columns if c not in columns]
        if missing:
            raise UserError(
                f"reward {self.name!r} needs column {missing[0]!r} in the dataset; the batch has columns "
                f"{sorted(columns)}: add it, or drop this reward"
            )
        rows: list[dict[str, Any]] = [{} for _ in range(n)]
        for column in self.required_columns + self.optional_columns:
            values = columns.get(column)
            if values is None:
                continue
            if len(values) != n:
                raise ValueError(f"reward {self.name!r}: column {column!r} has {len(values)} values for {n} "
                                 "completions")
            for i, value in enumerate(values):
                self.validate(column, i, value)
                rows[i][column] = value
        return rows

    def validate(self, column: str, row: int, value: Any) -> None:
        """Raise ValueError naming the reward, column and row when `value` is malformed (default: accept)."""

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        """Score each completion; return an exception instance for a row that failed."""
        raise NotImplementedError


def failure_metric(name: str, kind: str) -> str:
    """The name under which a reward's failures are logged: `rewards/<name>/failure_rate` (each batch, through
    `log_failure_rate`) and `rewards/<name>/failures` (the running count, `rewards.failure_callback`).

    >>> failure_metric("math", "failure_rate")
    'rewards/math/failure_rate'
    """
    return f"rewards/{name}/{kind}"


def log_failure_rate(log_metric: Any, name: str, failed: int, rows: int) -> None:
    """Report a batch's failure rate through TRL's `log_metric` callback (GRPOTrainer passes one), if any."""
    if callable(log_metric) and rows:
        log_metric(failure_metric(name, "failure_rate"), failed / rows)


def malformed(reward: str, column: str, row: int, value: Any, expected: str) -> UserError:
    """The error for a malformed column value: names the reward, column, row and what would be right."""
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return UserError(f"reward {reward!r}: column {column!r} in row {row} is {shown}; expected {expected}")
