"""The `math` reward: is the completion's final answer equal to the gold answer?

Answers are found by `answer_extraction` (cheap, in the caller), compared by math-verify (sympy under it) in a
bounded `WorkerPool`, so every row returns within `timeout` seconds from any thread or process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rewards.answer_extraction import as_number, final_answer, gold_answer
from rewards.base import Reward, RowScores, Score, malformed
from rewards.worker_pool import WorkerPool

_VERIFY_TARGET = "rewards.math_accuracy:verify_answers"


def verify_answers(gold: str, answer: str) -> bool | None:
    r"""math-verify's verdict on two extracted answers; None when the gold answer does not parse.

    Runs inside a pool worker, with math-verify's own (signal-based) timeouts off: the pool bounds it.

    >>> verify_answers(r"\frac{1}{2}", "0.5"), verify_answers("5", "x = 5"), verify_answers("3", "4")
    (True, True, False)
    """
    from math_verify import parse, verify

    # Wrapping in \boxed{} lets math-verify read bare LaTeX (`\dfrac{3}{4}`), which its default config skips.
    gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
    if not gold_parsed:
        return None
    answer_parsed = parse(f"\\boxed{{{answer}}}", parsing_timeout=None)
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def _quiet_math_verify() -> None:
    # With timeouts off on purpose, math-verify's "Timeout is disabled" warning is noise.
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)


_quiet_math_verify()


@dataclass
class MathReward(Reward):
    r"""1.0 when the completion's final answer equals the gold answer in column `solution`, else 0.0.

    The gold answer may be a final answer, a `\boxed{}` answer or a full reference solution ending in `#### x`;
    the completion's is its last `\boxed{}`, `#### x`, or a stated final answer ("The answer is 42").
    Rows whose `solution` is None or empty score None (not a math row).

    >>> reward = MathReward()
    >>> reward(completions=["<think>6*7</think> The answer is \\boxed{42}.", "#### 41"], solution=["42", "42"])
    [1.0, 0.0]
    """

    name: ClassVar[str] = "math"
    required_columns: ClassVar[tuple[str, ...]] = ("solution",)

    timeout: float = field(default=1.0, metadata={"help": "Wall-clock seconds per row before it scores `fallback`."})
    workers: int = field(default=0, metadata={"help": "Verifier processes; 0 means min(4, CPU count)."})
    fallback: Score = field(default=0.0, metadata={"help": "Score of a row that timed out or failed."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timeout <= 0:
            raise ValueError(f"reward 'math': timeout must be > 0 seconds, got {self.timeout}")
        if self.workers < 0:
            raise ValueError(f"reward 'math': workers must be >= 0 (0 = automatic), got {self.workers}")
        self._pool: WorkerPool | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The pool's pipes do not travel; a copy starts its own workers on first use.
        return {**self.__dict__, "_pool": None}

    def validate(self, column: str, row: int, value: Any) -> None:
        if value is not None and not isinstance(value, (str, int, float)):
            raise malformed(self.name, column, row, value, "a string such as '42', '\\boxed{42}' or '... #### 42'")

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        scores: list[Score | BaseException] = [None] * len(texts)
        tasks, where = [], []
        for i, (text, row) in enumerate(zip(texts, rows, strict=True)):
            solution = row.get("solution")
            gold = gold_answer(str(solution)) if solution is not None else None
            if gold is None:
                continue
            answer = final_answer(text)
            scores[i] = 0.0 if answer is None else _settled(answer, gold)
            if scores[i] is None:
                tasks.append((gold, answer))
                where.append(i)
        if tasks:
            for i, verdict in zip(where, self._verifier().map(tasks), strict=True):
                scores[i] = verdict if isinstance(verdict, BaseException) or verdict is None else float(verdict)
        return scores

    def start(self) -> None:
        """Start the verifier workers now and wait until they are ready (otherwise the first call does)."""
        self._verifier().start()

    def _verifier(self) -> WorkerPool:
        if self._pool is None:
            workers = self.workers or min(4, os.cpu_count() or 1)
            self._pool = WorkerPool(_VERIFY_TARGET, workers=workers, timeout=self.timeout,
                                    warmup=(r"\frac{1}{2}", r"\sqrt{x} = 0.5"))
        return self._pool


# Below this, distinct integers stay distinct in math-verify's 15-digit numeric comparison too.
_EXACT_INTEGERS = 10**12


def _settled(answer: str, gold: str) -> float | None:
    """The verdict where it needs no math-verify round trip (the one it would give), else None.

    >>> _settled("1080.0", "1080"), _settled("41", "42"), _settled("None", "85"), _settled("x = 5", "5")
    (1.0, 0.0, 0.0, None)
    """
    if answer == gold:
        return 1.0
    x, y = as_number(answer), as_number(gold)
    if x is not None and x == y:  # equal exact decimals
        return 1.0
    if y is None or y.denominator != 1:
        return None
    if (x is not None and x.denominator == 1 and "." not in answer + gold
            and max(abs(x), abs(y)) < _EXACT_INTEGERS):  # distinct integers
        return 0.0
    # Without a digit or a LaTeX command an answer names no number (words, "None", a weak model's noise) and is
    # wrong for an integer gold; math-verify would spend up to 0.1 s in sympy to say so. The one difference, on
    # purpose: constant-only expressions sympy reduces to an integer ("e/e", "pi-pi") score 0 here, as a grader
    # asking for a number would score them.
    if not any(c.isdigit() or c == "\\" for c in answer):
        return 0.0
    return None
