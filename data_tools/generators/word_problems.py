"""Templated one- and two-step word problems with equation working.

A problem's key is its template and numbers; the name and the item are decoration drawn independently, so the
same arithmetic never lands in both splits under two different names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from data_tools.generators.problem import Problem, r1_response
from posttrain.errors import UserError

NAMES = ("Tom", "Sara", "Ali", "Mia", "Ben", "Lena", "Omar", "Zoe", "Ravi", "Emma", "Kai", "Nora")
ITEMS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "cards", "shells", "coins", "stamps")


@dataclass(frozen=True)
class _Template:
    text: str
    # (a, b, c) -> (steps, answer); None when the numbers do not fit the story (e.g. a negative remainder)
    solve: Callable[[int, int, int], tuple[list[str], int] | None]
    uses_c: bool = False


def _exact_share(a: int, b: int, c: int) -> tuple[list[str], int]:
    return [f"{a * b}/{b}={a}"], a


TEMPLATES = (
    _Template("{name} has {a} {item}. {name} buys {b} more. How many {item} does {name} have now?",
              lambda a, b, c: ([f"{a}+{b}={a + b}"], a + b)),
    _Template("{name} has {a} {item} and gives away {b}. How many {item} are left?",
              lambda a, b, c: ([f"{a}-{b}={a - b}"], a - b) if a >= b else None),
    _Template("{name} buys {a} boxes of {item}. Each box holds {b} {item}. How many {item} is that in total?",
              lambda a, b, c: ([f"{a}*{b}={a * b}"], a * b)),
    _Template("{name} has {a} {item}, then buys {b} bags with {c} {item} in each bag. How many {item} now?",
              lambda a, b, c: ([f"{b} bags of {c} is {b}*{c}={b * c}", f"{a}+{b * c}={a + b * c}"], a + b * c),
              uses_c=True),
    _Template("{name} had {a} dollars, spent {b} dollars on a book and {c} dollars on lunch. How many dollars are"
              " left?",
              lambda a, b, c: ([f"{b}+{c}={b + c}", f"{a}-{b + c}={a - b - c}"], a - b - c) if a >= b + c else None,
              uses_c=True),
    _Template("A train travels {a} miles each hour for {b} hours. How many miles does it travel?",
              lambda a, b, c: ([f"{a}*{b}={a * b}"], a * b)),
    _Template("{name} shares {ab} {item} equally among {b} friends. How many {item} does each friend get?",
              _exact_share),
)


@dataclass
class WordProblemsConfig:
    """Difficulty knobs of the `word_problems` task."""

    max_number: int = field(default=20, metadata={"help": "Largest number in a problem's text (>= 2)."})

    def __post_init__(self) -> None:
        if self.max_number < 2:
            raise UserError(f"word_problems option max_number must be >= 2, got {self.max_number}")


def sample(rng: random.Random, cfg: WordProblemsConfig) -> Problem:
    """One word problem; resamples numbers until the story makes sense (no negative amounts)."""
    index = rng.randrange(len(TEMPLATES))
    template = TEMPLATES[index]
    while True:
        a, b = rng.randint(2, cfg.max_number), rng.randint(2, cfg.max_number)
        c = rng.randint(2, cfg.max_number) if template.uses_c else 0
        solved = template.solve(a, b, c)
        if solved is not None:
            break
    steps, answer = solved
    prompt = template.text.format(name=rng.choice(NAMES), item=rng.choice(ITEMS), a=a, b=b, c=c, ab=a * b)
    return Problem(key=(index, a, b, c), prompt=prompt, response=r1_response(steps, str(answer)), solution=str(answer))
