"""Text tasks with one exact answer: reverse, uppercase, sort words, sort numbers, count a letter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from data_tools.generators.problem import Problem, r1_response
from posttrain.errors import UserError

KINDS = ("reverse", "uppercase", "sort_words", "sort_numbers", "count_letter")
WORDS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum", "kiwi", "melon", "olive", "pear",
         "river", "stone", "cloud", "tiger", "zebra", "otter", "eagle", "horse", "piano", "drum", "flute", "violin")


@dataclass
class TextTasksConfig:
    """Difficulty knobs of the `text_tasks` task."""

    kinds: tuple[str, ...] = field(default=KINDS, metadata={"help": f"Kinds to sample from, any of {KINDS}."})
    max_length: int = field(default=7, metadata={"help": "Longest random word, and most items in a list (>= 3)."})

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise UserError(f"text_tasks option kinds: {list(self.kinds)} must be a non-empty subset of {list(KINDS)}")
        if self.max_length < 3:
            raise UserError(f"text_tasks option max_length must be >= 3, got {self.max_length}")


def _word(rng: random.Random, cfg: TextTasksConfig) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, cfg.max_length)))


def sample(rng: random.Random, cfg: TextTasksConfig) -> Problem:
    """One text task; the key is the kind and its exact input."""
    kind = rng.choice(cfg.kinds)
    if kind == "reverse":
        word = _word(rng, cfg)
        answer = word[::-1]
        prompt, steps, key = f"Reverse the string '{word}'.", [" ".join(word), " ".join(answer)], (word,)
    elif kind == "uppercase":
        word = _word(rng, cfg)
        answer = word.upper()
        prompt, steps, key = f"Convert '{word}' to uppercase.", [" ".join(word), " ".join(answer)], (word,)
    elif kind == "sort_words":
        words = tuple(rng.sample(WORDS, rng.randint(3, min(cfg.max_length, 6))))
        answer = ", ".join(sorted(words))
        prompt = f"Sort these words alphabetically: {', '.join(words)}."
        steps, key = [" ".join(w[0] for w in words), " ".join(sorted(w[0] for w in words))], words
    elif kind == "sort_numbers":
        numbers = tuple(rng.randint(0, 99) for _ in range(rng.randint(3, cfg.max_length)))
        answer = ", ".join(map(str, sorted(numbers)))
        prompt = f"Sort these numbers in ascending order: {', '.join(map(str, numbers))}."
        steps, key = [f"smallest first: {answer}"], numbers
    else:
        word = _word(rng, cfg)
        letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("aeiou")
        marks = [c for c in word if c == letter]
        answer = str(len(marks))
        prompt = f"How many times does the letter '{letter}' appear in '{word}'?"
        steps, key = [" ".join(word), f"{letter}: {' '.join(marks) or 'none'}"], (word, letter)
    return Problem(key=(kind, *key), prompt=prompt, response=r1_response(steps, answer), solution=answer)
