"""The `format` reward: R1-style `<think>...</think>` reasoning, then an answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rewards.base import Reward, RowScores

OPEN, CLOSE = "<think>", "</think>"


@dataclass
class FormatReward(Reward):
    """Partial credit, 0.25 each, for: exactly one `<think>`; exactly one `</think>`; the completion opening
    with `<think>` and closing it after; a non-empty answer after `</think>`. 1.0 means the full R1 format.

    With `think_in_prompt=True` (chat templates that end the prompt with `<think>`), the completion must not
    repeat the opening tag: the first two checks then ask for no `<think>` at all.

    >>> FormatReward()(completions=["<think>6*7</think> 42", "<think>6*7</think>", "<think>6*7", "42"])
    [1.0, 0.75, 0.25, 0.0]
    """

    name: ClassVar[str] = "format"

    think_in_prompt: bool = field(default=False, metadata={"help": "The prompt already opens <think>."})

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        return [self._score(text) for text in texts]

    def _score(self, text: str) -> float:
        text = text.strip()
        opens, closes = text.count(OPEN), text.count(CLOSE)
        expected_opens = 0 if self.think_in_prompt else 1
        starts = self.think_in_prompt or text.startswith(OPEN)
        reasoning, _, answer = text.partition(CLOSE)
        checks = (
            opens == expected_opens,
            closes == 1,
            starts and closes >= 1 and reasoning.removeprefix(OPEN).strip() != "",
            closes >= 1 and answer.strip() != "",
        )
        return 0.25 * sum(checks)
