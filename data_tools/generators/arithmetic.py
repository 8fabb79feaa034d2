"""Multi-digit addition, subtraction and multiplication with digit-by-digit working a tiny model can learn.

The working is column arithmetic written least-significant digit first, one line per column, always in the same
shape: addition "8+6+1=15, write 5 carry 1"; subtraction "2+10-1-5=6, write 6 borrow 1"; multiplication by a
one-digit number "7*6+4=46, write 6 carry 4", and by a longer one partial products then their sum.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from data_tools.generators.problem import Problem, r1_response
from posttrain.errors import UserError

OPS = ("add", "sub", "mul")
_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


@dataclass
class ArithmeticConfig:
    """Difficulty knobs of the `arithmetic` task."""

    ops: tuple[str, ...] = field(default=OPS, metadata={"help": f"Operations to sample from, any of {OPS}."})
    max_digits: int = field(default=3, metadata={"help": "Most digits of an addition or subtraction operand."})
    mul_max_digits: tuple[int, int] = field(
        default=(2, 1), metadata={"help": "Most digits of the first and second multiplication operands."}
    )
    allow_negative: bool = field(default=False, metadata={"help": "Let a subtraction's result be negative."})

    def __post_init__(self) -> None:
        self.ops = tuple(self.ops)
        self.mul_max_digits = tuple(self.mul_max_digits)
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise UserError(f"arithmetic option ops: {list(self.ops)} must be a non-empty subset of {list(OPS)}")
        if self.max_digits < 1 or len(self.mul_max_digits) != 2 or min(self.mul_max_digits) < 1:
            raise UserError("arithmetic options max_digits and mul_max_digits (two numbers) must be >= 1")


def _operand(rng: random.Random, max_digits: int) -> int:
    # Uniform over the digit count first, so 1-digit operands are as common as 3-digit ones.
    digits = rng.randint(1, max_digits)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _digits(n: int, width: int) -> list[int]:
    """Digits of `n`, least significant first, zero-padded to `width`."""
    return [int(c) for c in reversed(str(n).zfill(width))]


def add_steps(a: int, b: int) -> list[str]:
    """Column addition working.

    >>> add_steps(478, 56)
    ['8+6=14, write 4 carry 1', '7+5+1=13, write 3 carry 1', '4+0+1=5, write 5']
    """
    width = max(len(str(a)), len(str(b)))
    steps, carry = [], 0
    for x, y in zip(_digits(a, width), _digits(b, width), strict=True):
        total = x + y + carry
        expr = f"{x}+{y}" + (f"+{carry}" if carry else "")
        carry = total // 10
        steps.append(f"{expr}={total}, write {total % 10}" + (f" carry {carry}" if carry else ""))
    if carry:
        steps.append(f"write {carry}")
    return steps


def sub_steps(a: int, b: int) -> list[str]:
    """Column subtraction working for a >= b.

    >>> sub_steps(402, 15)
    ['2+10-5=7, write 7 borrow 1', '0+10-1-1=8, write 8 borrow 1', '4-1-0=3, write 3']
    """
    width = len(str(a))
    steps, borrow = [], 0
    for x, y in zip(_digits(a, width), _digits(b, width), strict=True):
        lend = 10 if x - borrow < y else 0
        expr = f"{x}" + (f"+{lend}" if lend else "") + (f"-{borrow}" if borrow else "") + f"-{y}"
        value = x + lend - borrow - y
        borrow = 1 if lend else 0
        steps.append(f"{expr}={value}, write {value}" + (" borrow 1" if borrow else ""))
    return steps


def mul_steps(a: int, b: int) -> list[str]:
    """Long multiplication working: digit by digit for a one-digit `b`, else shifted partial products summed.

    >>> mul_steps(47, 6)
    ['7*6=42, write 2 carry 4', '4*6+4=28, write 28']
    >>> mul_steps(12, 34)
    ['12*4=48', '12*3=36, shifted 360', '48+360=408']
    """
    if b < 10:
        digits = _digits(a, len(str(a)))
        steps, carry = [], 0
        for i, x in enumerate(digits):
            total = x * b + carry
            expr = f"{x}*{b}" + (f"+{carry}" if carry else "")
            if i == len(digits) - 1:
                steps.append(f"{expr}={total}, write {total}")
            else:
                carry = total // 10
                steps.append(f"{expr}={total}, write {total % 10}" + (f" carry {carry}" if carry else ""))
        return steps
    steps, partials = [], []
    for place, y in enumerate(_digits(b, len(str(b)))):
        partial = a * y * 10**place
        partials.append(partial)
        steps.append(f"{a}*{y}={a * y}" + (f", shifted {partial}" if place else ""))
    steps.append("+".join(map(str, partials)) + f"={a * b}")
    return steps


def sample(rng: random.Random, cfg: ArithmeticConfig) -> Problem:
    """One arithmetic problem; its key orders a commutative pair so 12*3 and 3*12 share a split."""
    op = rng.choice(cfg.ops)
    if op == "mul":
        a, b = _operand(rng, cfg.mul_max_digits[0]), _operand(rng, cfg.mul_max_digits[1])
        steps, value = mul_steps(a, b), a * b
        key = ("mul", *sorted((a, b)))
    else:
        a, b = _operand(rng, cfg.max_digits), _operand(rng, cfg.max_digits)
        if op == "add":
            steps, value, key = add_steps(a, b), a + b, ("add", *sorted((a, b)))
        else:
            if a < b and not cfg.allow_negative:
                a, b = b, a
            if a >= b:
                steps, value = sub_steps(a, b), a - b
            else:
                steps = [f"{a} < {b}, so compute {b}-{a} and negate", *sub_steps(b, a)]
                value = a - b
            key = ("sub", a, b)
    return Problem(key=key, prompt=f"What is {a} {_SYMBOL[op]} {b}?", response=r1_response(steps, str(value)),
                   solution=str(value))
