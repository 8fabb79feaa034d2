"""What every builtin task produces, and how problems are split into train and held-out.

A task samples `Problem`s; the split a problem belongs to is a pure function of its canonical key (the operands and
template, never the names or wording around them), so a held-out problem can never be generated for training,
whatever the seed, the difficulty knobs or the number of rows asked for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "heldout"]
SPLITS: tuple[str, ...] = ("train", "heldout")

# Fixed, not a knob: a caller generating the held-out split with another fraction than the training run used
# would overlap it.
HELDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class Problem:
    """One sampled problem before it becomes a row: `key` identifies the problem itself (what decides its split
    and id), the rest is its text and how to verify an answer."""

    key: tuple
    prompt: str
    response: str
    solution: str | None = None
    tests: str | None = None
    entry_point: str | None = None


def key_digest(task: str, key: tuple) -> str:
    """Hex sha256 of a task's canonical problem key: stable across processes and Python versions.

    >>> key_digest("arithmetic", ("add", 1, 2))[:12]
    '41801a77c1cf'
    """
    return hashlib.sha256(f"{task}|{key!r}".encode()).hexdigest()


def split_of(task: str, key: tuple) -> Split:
    """The split a problem belongs to: held-out for a fixed ~10% of canonical keys, by hash.

    >>> split_of("arithmetic", ("add", 1, 2)) in SPLITS
    True
    """
    return "heldout" if int(key_digest(task, key)[:16], 16) < HELDOUT_FRACTION * 2**64 else "train"


def r1_response(steps: list[str], answer: str) -> str:
    r"""An R1-style answer: short working inside `<think>`, then one final line with the boxed answer.

    >>> print(r1_response(["2+2=4"], "4"))
    <think>
    2+2=4
    </think>
    The answer is \boxed{4}.
    """
    return "<think>\n" + "\n".join(steps) + "\n</think>\nThe answer is \\boxed{" + answer + "}."
