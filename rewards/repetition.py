"""The `repetition` reward: a penalty for repeated n-grams."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from trl.rewards import get_repetition_penalty_reward

from posttrain.errors import UserError
from rewards.base import Reward, RowScores
from rewards.completion_length import completion_tokens


@dataclass
class RepetitionReward(Reward):
    """`max_penalty * (1 - unique n-grams / n-grams)` ("Demystifying Long Chain-of-Thought Reasoning",
    arXiv 2502.03373, App. C.2): 0 for text without a repeated n-gram, approaching `max_penalty` for a loop.
    TRL's `get_repetition_penalty_reward` computes it, over tokens (`completion_ids`, which TRL passes) or,
    without them, lower-cased words; completions shorter than `ngram_size` score 0.

    >>> RepetitionReward(ngram_size=2)(completions=["the cat sat down", "go go go go go"])
    [0.0, -0.75]
    """

    name: ClassVar[str] = "repetition"
    optional_columns: ClassVar[tuple[str, ...]] = ("completion_ids",)

    ngram_size: int = field(default=3, metadata={"help": "Length of the n-grams compared."})
    max_penalty: float = field(default=-1.0, metadata={"help": "Penalty of a fully repetitive text; <= 0."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ngram_size < 1 or self.max_penalty > 0:
            raise UserError(f"reward 'repetition': need ngram_size >= 1 and max_penalty <= 0, got "
                            f"ngram_size={self.ngram_size}, max_penalty={self.max_penalty}")
        self._penalty = get_repetition_penalty_reward(self.ngram_size, self.max_penalty)

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        tokens = [[t.lower() if isinstance(t, str) else t for t in completion_tokens(text, row)]
                  for text, row in zip(texts, rows, strict=True)]
        return self._penalty(tokens)
