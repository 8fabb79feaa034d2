"""The `code` reward: run the completion's code against the row's tests in the local sandbox."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from posttrain.errors import UserError
from rewards.base import Reward, RowScores, Score, malformed
from rewards.sandbox import ISOLATIONS, Sandbox, SandboxLimits

_FENCE = re.compile(r"```[ \t]*(?P<lang>[\w+-]*)[ \t]*\n(?P<code>.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The last ```python block of a completion (after `</think>` when there is one), else its last fenced
    block, else the whole text.

    >>> extract_code("Try:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    >>> extract_code("def g(): return 2")
    'def g(): return 2'
    """
    answer = text.rpartition("</think>")[2]
    blocks = list(_FENCE.finditer(answer))
    python = [b for b in blocks if b.group("lang").lower() in ("python", "py", "python3")]
    chosen = python or blocks
    return chosen[-1].group("code") if chosen else answer


def build_programs(code: str, tests: str | list[str], entry_point: str | None) -> list[str]:
    """One program per test: the solution, then the test, then `check(<entry_point>)` when given (HumanEval).

    >>> build_programs("def f(): return 1", "assert f() == 1", None)
    ['def f(): return 1\\n\\nassert f() == 1\\n']
    """
    check = f"\ncheck({entry_point})\n" if entry_point else ""
    return [f"{code}\n\n{test}\n{check}" for test in ([tests] if isinstance(tests, str) else tests)]


@dataclass
class CodeReward(Reward):
    """Fraction of the row's tests the completion's code passes, run in the sandbox (`rewards.sandbox`).

    Column `tests`: a string of Python run after the solution (score 1 or 0), or a list of such strings (score =
    fraction passed); optional `entry_point` appends `check(<entry_point>)` as HumanEval does. Rows whose `tests`
    is None or an empty list score None (not a code row).

    >>> reward = CodeReward(timeout=2)
    >>> reward(completions=["```python\\ndef add(a, b):\\n    return a + b\\n```", "def add(a, b): return a - b"],
    ...        tests=[["assert add(1, 2) == 3", "assert add(0, 0) == 0"]] * 2)
    [1.0, 0.5]
    """

    name: ClassVar[str] = "code"
    required_columns: ClassVar[tuple[str, ...]] = ("tests",)
    optional_columns: ClassVar[tuple[str, ...]] = ("entry_point",)

    timeout: float = field(default=5.0, metadata={"help": "Wall-clock seconds per program (CPU limit likewise)."})
    memory_mb: int = field(default=1024, metadata={"help": "Address-space limit per program, MiB."})
    max_processes: int = field(default=32, metadata={"help": "Process-count limit per program."})
    max_file_mb: int = field(default=16, metadata={"help": "Largest file (and output) a program may write, MiB."})
    workers: int = field(default=0, metadata={"help": "Programs run at once; 0 means min(8, 2 x CPU count)."})
    isolation: str = field(default="auto", metadata={"help": f"One of {ISOLATIONS}; auto picks the strongest."})
    fallback: Score = field(default=0.0, metadata={"help": "Score of a row whose run failed in the sandbox."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.isolation not in ISOLATIONS:
            raise UserError(f"reward 'code': isolation must be one of {ISOLATIONS}, got {self.isolation!r}")
        if self.workers < 0:
            raise UserError(f"reward 'code': workers must be >= 0 (0 = automatic), got {self.workers}")
        self.limits = SandboxLimits(self.timeout, self.memory_mb, self.max_processes, self.max_file_mb)
        self._sandbox: Sandbox | None = None
        self._owner = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        # Slots are processes; a copy in another process starts its own.
        return {**self.__dict__, "_sandbox": None}

    def validate(self, column: str, row: int, value: Any) -> None:
        if value is None:
            return
        if column == "entry_point":
            if not (isinstance(value, str) and value.isidentifier()):
                raise malformed(self.name, column, row, value, "the name of the function the tests check, or None")
        elif not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(t, str) for t in value))):
            raise malformed(self.name, column, row, value, "a string of Python asserts or a list of such strings")

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        programs: list[str] = []
        spans: list[tuple[int, int] | None] = []
        for text, row in zip(texts, rows, strict=True):
            tests = row.get("tests")
            if not tests:
                spans.append(None)
                continue
            built = build_programs(extract_code(text), tests, row.get("entry_point"))
            spans.append((len(programs), len(programs) + len(built)))
            programs.extend(built)
        verdicts = self.sandbox().run(programs) if programs else []
        return [None if span is None else sum(v.passed for v in verdicts[span[0] : span[1]]) / (span[1] - span[0])
                for span in spans]

    def sandbox(self) -> Sandbox:
        """This reward's sandbox pool, started on first use (again after a fork)."""
        if self._sandbox is None or self._owner != os.getpid():
            self._sandbox = Sandbox(self.limits, workers=self.workers, isolation=self.isolation)
            self._owner = os.getpid()
        return self._sandbox
