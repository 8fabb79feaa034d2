"""The `text` reward: is the completion's final answer the gold text, exactly?

For answers that are no math (a reversed word, an upper-cased word, a sorted list): `math` reads such golds as no
answer and scores them None, and math-verify would read "qyqv" and "vqyq" as the same product of four symbols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rewards.answer_extraction import answer_region, stated_text
from rewards.base import Reward, RowScores, Score, completion_text, malformed


@dataclass
class TextAnswerReward(Reward):
    r"""1.0 when the completion's final answer (its last `\boxed{}`, else the rest of its last "answer:" line) is
    the text in column `solution`, spaces collapsed and case kept, else 0.0; None where `solution` is None or empty.

    >>> TextAnswerReward()(completions=[r"The answer is \boxed{vqyq}.", r"\boxed{qyqv}", "no idea"],
    ...                    solution=["vqyq", "vqyq", "vqyq"])
    [1.0, 0.0, 0.0]
    """

    name: ClassVar[str] = "text"
    required_columns: ClassVar[tuple[str, ...]] = ("solution",)

    def validate(self, column: str, row: int, value: Any) -> None:
        if value is not None and not isinstance(value, (str, int, float)):
            raise malformed(self.name, column, row, value, "a string such as 'olleh' or 'apple, pear'")

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        scores: list[Score | BaseException] = []
        for text, row in zip(texts, rows, strict=True):
            solution = row.get("solution")
            gold = stated_text(answer_region(str(solution))) if solution is not None else None
            scores.append(None if gold is None else float(stated_text(answer_region(text)) == gold))
        return scores

    def final_answers(self, completions: list[Any]) -> list[str | None]:
        """Each completion's final answer as this reward reads it: the answers a majority vote counts."""
        return [stated_text(answer_region(completion_text(c))) for c in completions]
