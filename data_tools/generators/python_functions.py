"""Small Python function tasks with HumanEval-style tests (`check(candidate)` plus `entry_point`) and a reference
solution in the assistant message that passes them.

Each family is a parameterized function; the key is the family and its parameters, so the test inputs (drawn per
row) never decide the split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from data_tools.generators.problem import Problem
from posttrain.errors import UserError


@dataclass(frozen=True)
class _Family:
    name: str  # function name, formatted with the parameters
    describe: str  # what the function must do, formatted with the parameters
    arg: str
    body: str  # the reference's return expression
    compute: Callable[..., Callable[[Any], Any]]  # params -> the reference as a Python callable
    params: Callable[[random.Random, int], tuple[int, ...]]
    inputs: Callable[..., Any]  # (rng, *params) -> one test input
    plan: str  # one line of working


def _ints(rng: random.Random, k: int) -> list[int]:
    # Around k, so both sides of the condition show up in the tests.
    return [rng.randint(-5, 2 * k + 5) for _ in range(rng.randint(0, 6))]


def _word(rng: random.Random, *params: int) -> str:
    return "".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 6)))


FAMILIES = (
    _Family("add_{0}", "returns x plus {0}", "x", "x + {0}", lambda k: lambda x: x + k,
            lambda r, m: (r.randint(1, m),), lambda r, k: r.randint(-20, 50), "add {0} to x"),
    _Family("scale_{0}_shift_{1}", "returns x times {0} plus {1}", "x", "x * {0} + {1}",
            lambda k, j: lambda x: x * k + j, lambda r, m: (r.randint(2, 9), r.randint(1, m)),
            lambda r, k, j: r.randint(-10, 20), "multiply x by {0}, then add {1}"),
    _Family("is_multiple_of_{0}", "returns True when the integer n is divisible by {0}, else False", "n",
            "n % {0} == 0", lambda k: lambda n: n % k == 0, lambda r, m: (r.randint(2, m),),
            lambda r, k: r.choice((r.randint(0, 100), k * r.randint(0, 9))), "n is divisible by {0} when n % {0} == 0"),
    _Family("count_greater_than_{0}", "returns how many numbers in the list nums are greater than {0}", "nums",
            "sum(1 for x in nums if x > {0})", lambda k: lambda nums: sum(1 for x in nums if x > k),
            lambda r, m: (r.randint(0, m),), _ints, "count the numbers above {0}"),
    _Family("sum_of_multiples_of_{0}", "returns the sum of the numbers in the list nums that are divisible by {0}",
            "nums", "sum(x for x in nums if x % {0} == 0)", lambda k: lambda nums: sum(x for x in nums if x % k == 0),
            lambda r, m: (r.randint(2, min(m, 12)),), _ints, "keep the multiples of {0} and add them"),
    _Family("repeat_{0}", "returns the string s repeated {0} times", "s", "s * {0}", lambda k: lambda s: s * k,
            lambda r, m: (r.randint(2, 9),), _word, "repeat s {0} times with *"),
    _Family("last_{0}_chars", "returns the last {0} characters of the string s (all of s if it is shorter)", "s",
            "s[-{0}:]", lambda k: lambda s: s[-k:], lambda r, m: (r.randint(1, 9),), _word, "slice s[-{0}:]"),
    _Family("clamp_{0}_{1}", "returns x limited to the range {0} to {1}", "x", "min(max(x, {0}), {1})",
            lambda lo, hi: lambda x: min(max(x, lo), hi), lambda r, m: (lo := r.randint(0, m), lo + r.randint(1, m)),
            lambda r, lo, hi: r.randint(lo - 10, hi + 10), "raise x to at least {0}, then cap it at {1}"),
)


@dataclass
class PythonFunctionsConfig:
    """Difficulty knobs of the `python_functions` task."""

    max_constant: int = field(default=50, metadata={"help": "Largest constant in a function (>= 2)."})
    num_tests: int = field(default=3, metadata={"help": "Asserts per task (>= 1)."})

    def __post_init__(self) -> None:
        if self.max_constant < 2 or self.num_tests < 1:
            raise UserError("python_functions options: max_constant must be >= 2 and num_tests >= 1, got "
                            f"{self.max_constant} and {self.num_tests}")


def sample(rng: random.Random, cfg: PythonFunctionsConfig) -> Problem:
    """One function task: prompt, reference solution in a ```python block, tests and entry point."""
    index = rng.randrange(len(FAMILIES))
    family = FAMILIES[index]
    params = family.params(rng, cfg.max_constant)
    name = family.name.format(*params)
    reference = family.compute(*params)
    code = f"def {name}({family.arg}):\n    return {family.body.format(*params)}\n"
    values: list[Any] = []
    for _ in range(20 * cfg.num_tests):  # distinct inputs where the family has enough of them
        value = family.inputs(rng, *params)
        if value not in values:
            values.append(value)
        if len(values) == cfg.num_tests:
            break
    checks = [f"    assert candidate({value!r}) == {reference(value)!r}" for value in values]
    prompt = f"Write a Python function `{name}({family.arg})` that {family.describe.format(*params)}."
    response = f"<think>\n{family.plan.format(*params)}\n</think>\n```python\n{code}```"
    return Problem(key=(index, *params), prompt=prompt, response=response,
                   tests="def check(candidate):\n" + "\n".join(checks) + "\n", entry_point=name)
