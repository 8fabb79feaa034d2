"""The R1 think format, `<think>reasoning</think>answer`: its tags, how a text splits into reasoning and answer
(`split_think`), how a trace is written (`format_trace`), and the `format` reward that scores it."""

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


def split_think(text: str, think_in_prompt: bool = False) -> tuple[str, str] | None:
    """(reasoning, answer) of an R1-style text, or None unless it is one balanced `<think>...</think>` block opening
    the text, followed by a non-empty answer. With `think_in_prompt` the text holds only the closing tag.

    >>> split_think("<think>\\n6*7=42\\n</think>\\nThe answer is 42.")
    ('6*7=42', 'The answer is 42.')
    >>> split_think("6*7=42</think>42", think_in_prompt=True), split_think("<think>a<think>b</think>c")
    (('6*7=42', '42'), None)
    """
    body = text.strip()
    if not think_in_prompt:
        if not body.startswith(OPEN):
            return None
        body = body[len(OPEN):]
    if OPEN in body or body.count(CLOSE) != 1:
        return None
    reasoning, _, answer = body.partition(CLOSE)
    reasoning, answer = reasoning.strip(), answer.strip()
    if not reasoning or not answer:
        return None
    return reasoning, answer


def format_trace(reasoning: str, answer: str) -> str:
    """The SFT assistant turn: `<think>reasoning</think>answer` in the builtin rows' layout.

    >>> format_trace("2+2=4", "The answer is \\\\boxed{4}.")
    '<think>\\n2+2=4\\n</think>\\nThe answer is \\\\boxed{4}.'
    """
    return f"{OPEN}\n{reasoning}\n{CLOSE}\n{answer}"
