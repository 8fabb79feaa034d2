"""The `math` reward: is the completion's final answer equal to the gold answer?

math-verify reads both answers, with its own extraction configurations, and compares them (sympy under it), in a
bounded `WorkerPool`, so every row returns within `timeout` seconds from any thread or process. `answer_extraction`
decides what it is given (our policy) and settles plain numbers without the round trip.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, ClassVar

from posttrain.errors import UserError
from rewards.answer_extraction import answer_region, gold_text, is_answer_only, plain_number, states_answer
from rewards.base import Reward, RowScores, Score, completion_text, malformed
from rewards.worker_pool import WorkerPool

_VERIFY_TARGET = "rewards.math_accuracy:verify_region"


@lru_cache(maxsize=1)
def _configs() -> dict[str, list[Any]]:
    """math-verify's extraction configurations, per kind of text (built on first use: importing it imports sympy).

    A completion's final answer must be marked (a `\\boxed{}` or an answer phrase: no anchorless "last number"),
    unless the completion is only an answer; a gold answer is trusted as it is, its `\\boxed{}` first (as
    math-verify's own MATH-500 task reads golds).
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return {
        "marked": [LatexExtractionConfig(try_extract_without_anchor=False),
                   ExprExtractionConfig(try_extract_without_anchor=False)],
        "answer_only": [LatexExtractionConfig(), ExprExtractionConfig()],
        "gold": [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
    }


@lru_cache(maxsize=1024)
def _parse(text: str, kind: str) -> list[Any]:
    # GRPO scores a group of completions against one gold: each gold is parsed once per worker.
    from math_verify import parse

    return parse(text, _configs()[kind], parsing_timeout=None)


def verify_region(gold: str | None, region: str, answer_only: bool) -> tuple[bool | None, str | None]:
    r"""math-verify's verdict on a completion's answer region against a gold text (None when math-verify finds no
    answer in the gold, or no gold is given), and the completion's answer as math-verify reads it (None if none).

    Runs inside a pool worker, with math-verify's own (signal-based) timeouts off: the pool bounds it.

    >>> verify_region("$\\frac{1}{2}$", "The answer is 0.5", False), verify_region("3", r"\boxed{4}", False)
    ((True, '0.5'), (False, '4'))
    >>> verify_region("forty three", "The answer is 43.", False), verify_region(None, "I got 5", False)
    ((None, '43'), (None, None))
    """
    from math_verify import verify

    answer = _parse(region, "answer_only" if answer_only else "marked") if region else []
    text = next((a for a in answer if isinstance(a, str)), None)
    if gold is None:
        return None, text
    gold_parsed = _parse(gold, "gold")
    if not gold_parsed:
        return None, text
    return bool(verify(gold_parsed, answer, timeout_seconds=None)), text


def _quiet_math_verify() -> None:
    # With timeouts off on purpose, math-verify's "Timeout is disabled" warning is noise.
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)


_quiet_math_verify()


@dataclass
class MathReward(Reward):
    r"""1.0 when the completion's final answer equals the gold answer in column `solution`, else 0.0.

    The gold may be a bare answer (`42`, `\frac{3}{4}`, MATH's LaTeX without delimiters), a `\boxed{}` answer (one
    or several: a set), or a full solution ending in `#### x` (GSM8K) or a `\boxed{}` (MATH, NuminaMath). The
    completion's final answer is what math-verify reads after `</think>` where it is marked: a `\boxed{}`, "Final
    Answer: The final answer is $7$. I hope it is correct.", "The answer is 42", `#### 42`, or a completion that is
    only an answer. Rows whose `solution` is None or empty, or holds no answer math-verify can read ("forty
    three"), score None (cannot score). docs/rewards.md lists where this differs from math-verify, on purpose.

    >>> reward = MathReward()
    >>> reward(completions=["<think>6*7</think> The answer is \\boxed{42}.", "#### 41"], solution=["42", "42"])
    [1.0, 0.0]
    >>> reward(completions=["\\boxed{3}", "The answer is 43."], solution=["$\\boxed{2}, \\boxed{3}$", "forty three"])
    [0.0, None]
    """

    name: ClassVar[str] = "math"
    required_columns: ClassVar[tuple[str, ...]] = ("solution",)

    timeout: float = field(default=1.0, metadata={"help": "Wall-clock seconds per row before it scores `fallback`."})
    workers: int = field(default=0, metadata={"help": "Verifier processes; 0 means min(4, CPU count)."})
    fallback: Score = field(default=0.0, metadata={"help": "Score of a row that timed out or failed."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timeout <= 0:
            raise UserError(f"reward 'math': timeout must be > 0 seconds, got {self.timeout}")
        if self.workers < 0:
            raise UserError(f"reward 'math': workers must be >= 0 (0 = automatic), got {self.workers}")
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
            gold, gold_number = _read_gold(str(solution)) if solution is not None else (None, None)
            if gold is None:
                continue
            region = answer_region(text)
            if not states_answer(region):
                if gold_number is not None:
                    scores[i] = 0.0
                    continue
                region = ""  # nothing to read; math-verify still says whether the gold can be scored at all
            scores[i] = _settled(plain_number(region), gold_number)
            if scores[i] is None:
                # A plain gold goes as its number: the same reading, no re-parse of a long solution.
                tasks.append((gold if gold_number is None else f"${gold_number}$", region, is_answer_only(region)))
                where.append(i)
        if tasks:
            for i, result in zip(where, self._verifier().map(tasks), strict=True):
                if isinstance(result, BaseException):
                    scores[i] = result
                else:
                    scores[i] = None if result[0] is None else float(result[0])
        return scores

    def final_answers(self, completions: list[Any]) -> list[str | None]:
        r"""Each completion's final answer as math-verify reads it (under this reward's policy), None where it states
        none or the read timed out: the answers a majority vote counts.

        >>> MathReward().final_answers(["The answer is \\boxed{\\dfrac{3}{4}}.", "so we get 42", "#### 1,080"])
        ['\\frac{3}{4}', None, '1080']
        """
        answers: list[str | None] = [None] * len(completions)
        tasks, where = [], []
        for i, completion in enumerate(completions):
            region = answer_region(completion_text(completion))
            if not states_answer(region):
                continue
            number = plain_number(region)
            if number is not None:
                answers[i] = str(number)
            else:
                tasks.append((None, region, is_answer_only(region)))
                where.append(i)
        if tasks:
            for i, result in zip(where, self._verifier().map(tasks), strict=True):
                answers[i] = None if isinstance(result, BaseException) else result[1]
        return answers

    def start(self) -> None:
        """Start the verifier workers now and wait until they are ready (otherwise the first call does)."""
        self._verifier().start()

    def _verifier(self) -> WorkerPool:
        if self._pool is None:
            workers = self.workers or min(4, os.cpu_count() or 1)
            self._pool = WorkerPool(_VERIFY_TARGET, workers=workers, timeout=self.timeout,
                                    warmup=("$x^2+2x+1$", r"The answer is $\boxed{(x+1)^2}$", False))
        return self._pool


@lru_cache(maxsize=4096)
def _read_gold(solution: str) -> tuple[str | None, Fraction | None]:
    # GRPO scores each gold once per completion of its group: read it once.
    gold = gold_text(solution)
    return gold, None if gold is None else plain_number(gold)


# Below this, distinct integers stay distinct in math-verify's 15-digit numeric comparison too.
_EXACT_INTEGERS = 10**12


def _settled(answer: Fraction | None, gold: Fraction | None) -> float | None:
    """The verdict on two plain numbers where it needs no math-verify round trip (the one it gives), else None.

    >>> _settled(Fraction(1080), Fraction("1080.0")), _settled(Fraction(41), Fraction(42)), _settled(None, Fraction(1))
    (1.0, 0.0, None)
    """
    if answer is None or gold is None:
        return None
    if answer == gold:
        return 1.0
    # Distinct decimals may still be equal after math-verify's rounding (6 places): only integers are settled.
    if answer.denominator == gold.denominator == 1 and max(abs(answer), abs(gold)) < _EXACT_INTEGERS:
        return 0.0
    return None
