"""The `steps` reward: process credit for reproducing a reference solution's working, line by line.

The final-answer reward is all or nothing: on a problem worked in several steps, a completion with one slip scores
the same as one that is wrong throughout, and a group whose completions all fail (or all pass) gives GRPO no
gradient. When the dataset carries a worked reference solution (column `reference`, which the builtin tasks fill
with their generator's working), each step can be checked on its own: the reasoning lines the completion shares
with the reference, in order, over the longer of the two line counts. Extra or missing lines lower the score, so
padding the working with copied lines does not pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rewards.base import Reward, RowScores, malformed
from rewards.think_format import CLOSE, OPEN


def reasoning_lines(text: str) -> list[str]:
    """The non-empty, stripped lines of a completion's reasoning: inside `<think>...</think>` when it has the
    tags, else the whole text.

    >>> reasoning_lines("<think>\\n8+6=14, write 4 carry 1\\n\\n4+0+1=5, write 5\\n</think>\\nThe answer is 54.")
    ['8+6=14, write 4 carry 1', '4+0+1=5, write 5']
    """
    if CLOSE in text:
        text = text.partition(CLOSE)[0]
    text = text.partition(OPEN)[2] if OPEN in text else text
    return [line.strip() for line in text.splitlines() if line.strip()]


def common_in_order(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two line lists.

    >>> common_in_order(["x", "y", "z"], ["x", "z", "w"])
    2
    """
    previous = [0] * (len(b) + 1)
    for item in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if item == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


@dataclass
class StepsReward(Reward):
    """Fraction of the reference working's lines (column `reference`) the completion's reasoning reproduces in
    order, over the longer of the two: 1.0 for the reference working exactly, None for a row whose reference has
    no working.

    >>> ref = "<think>\\n8+6=14, write 4 carry 1\\n4+0+1=5, write 5\\n</think>\\nThe answer is \\\\boxed{54}."
    >>> StepsReward()(completions=["<think>\\n8+6=14, write 4 carry 1\\n4+0+1=6, write 6\\n</think>"],
    ...               reference=[ref])
    [0.5]
    """

    name: ClassVar[str] = "steps"
    required_columns: ClassVar[tuple[str, ...]] = ("reference",)

    def validate(self, column: str, row: int, value: Any) -> None:
        if value is not None and not isinstance(value, str):
            raise malformed(self.name, column, row, value, "the reference solution's text (a string) or None")

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        return [self._score(text, row.get("reference")) for text, row in zip(texts, rows, strict=True)]

    @staticmethod
    def _score(text: str, reference: str | None) -> float | None:
        expected = reasoning_lines(reference) if reference else []
        if not expected:
            return None
        got = reasoning_lines(text)
        return common_in_order(expected, got) / max(len(expected), len(got))
