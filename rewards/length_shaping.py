"""The `length` reward: cosine length-scaled correctness, plus DAPO's soft overlong penalty."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trl.rewards import get_soft_overlong_punishment

from posttrain.errors import UserError
from rewards.base import Reward, RowScores, Score
from rewards.completion_length import completion_tokens
from rewards.math_accuracy import MathReward


@dataclass
class LengthReward(Reward):
    """Cosine-scaled correctness ("Demystifying Long Chain-of-Thought Reasoning", arXiv 2502.03373, App. C.1):
    a correct answer earns `max_value_correct` when short, falling to `min_value_correct` at `max_len`; a wrong
    one earns `min_value_wrong` when short, rising to `max_value_wrong` at `max_len`. Correctness is the `math`
    reward's verdict on column `solution`; rows it cannot judge score None.

    With `overlong_cache > 0` it adds DAPO's soft overlong penalty (arXiv 2503.14476, eq. 13, TRL's
    `get_soft_overlong_punishment`): 0 up to `max_len - overlong_cache`, then falling linearly to -1 at `max_len`,
    and -1 beyond. With `cosine=False` the
    reward is that penalty alone and needs no `solution`. Length is counted in tokens (`completion_ids`, which
    TRL passes) or, without them, whitespace-separated words.

    >>> reward = LengthReward(max_len=2)
    >>> reward(completions=["\\\\boxed{2}", "a b c \\\\boxed{2}", "\\\\boxed{3}"], solution=["2", "2", "2"])
    [0.75, 0.5, -0.75]
    >>> LengthReward(max_len=10, overlong_cache=4, cosine=False)(completions=["w " * 5, "w " * 8, "w " * 12])
    [0.0, -0.5, -1.0]
    """

    name: ClassVar[str] = "length"
    optional_columns: ClassVar[tuple[str, ...]] = ("completion_ids",)

    max_len: int = field(default=1024, metadata={"help": "Length (tokens) at which the schedule ends."})
    min_value_wrong: float = field(default=-1.0, metadata={"help": "Reward of a wrong completion, shortest."})
    max_value_wrong: float = field(default=-0.5, metadata={"help": "Reward of a wrong completion at max_len."})
    min_value_correct: float = field(default=0.5, metadata={"help": "Reward of a correct completion at max_len."})
    max_value_correct: float = field(default=1.0, metadata={"help": "Reward of a correct completion, shortest."})
    overlong_cache: int = field(default=0, metadata={"help": "Soft overlong window in tokens; 0 turns it off."})
    cosine: bool = field(default=True, metadata={"help": "Include the cosine correctness term."})
    math_timeout: float = field(default=1.0, metadata={"help": "Per-row bound of the correctness check, seconds."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_len <= 0 or not 0 <= self.overlong_cache <= self.max_len:
            raise UserError(f"reward 'length': need max_len > 0 and 0 <= overlong_cache <= max_len, got "
                            f"max_len={self.max_len}, overlong_cache={self.overlong_cache}")
        if not (self.cosine or self.overlong_cache):
            raise UserError("reward 'length': with cosine=False set overlong_cache > 0, or nothing is rewarded")
        # An instance attribute: whether `solution` is needed depends on `cosine`.
        self.required_columns = ("solution",) if self.cosine else ()
        self._math = MathReward(timeout=self.math_timeout) if self.cosine else None
        overlong = self.overlong_cache > 0
        self._overlong = get_soft_overlong_punishment(self.max_len, self.overlong_cache) if overlong else None

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        tokens = [completion_tokens(text, row) for text, row in zip(texts, rows, strict=True)]
        scores: list[Score] = [0.0] * len(texts)
        if self._math is not None:
            correct = self._math(prompts, texts, solution=[row["solution"] for row in rows])
            scores = [None if c is None else self._cosine(bool(c), len(t))
                      for c, t in zip(correct, tokens, strict=True)]
        if self._overlong is not None:
            scores = [None if s is None else s + p for s, p in zip(scores, self._overlong(tokens), strict=True)]
        return scores

    def _cosine(self, correct: bool, length: int) -> float:
        # Clamped: past max_len the cosine would climb back up and reward rambling.
        progress = min(length / self.max_len, 1.0)
        low, high = ((self.min_value_correct, self.max_value_correct) if correct
                     else (self.max_value_wrong, self.min_value_wrong))
        return low + 0.5 * (high - low) * (1.0 + math.cos(progress * math.pi))
