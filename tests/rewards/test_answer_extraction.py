"""The cheap readings in the caller: what math-verify is given, and the plain numbers settled without it."""

import itertools
import time
from fractions import Fraction

import pytest

from rewards.answer_extraction import answer_region, gold_text, is_answer_only, plain_number, states_answer
from rewards.math_accuracy import _parse

PREFIXES = [
    "", "We compute $3+4=7$ and then $x = 5$. ", "The final answer will follow. 12 is not it.\n", "Answer is hard. ",
    "\\[ x = 3 \\]\n", "Since $\\frac{1}{2}$ of 10 is 5, ", "First \\boxed{5}. ", "cost $5 and ", "\\[ unclosed ",
    "The final answer is 3. I hope it is correct.\n", "Answer: 9\n", "$x = ", "so the final answer, which is 8, ",
    "<think>\\boxed{1}</think>", "#### 4\n", "**Step 1:** add.\n", "( [ 3 ] ) ",
]
ENDINGS = [
    "{n}", "${n}$", "\\boxed{{{n}}}", "$\\boxed{{{n}}}$", "The answer is {n}.", "The final answer is ${n}$.",
    "**Answer:** {n}", "**Final Answer**\n\\[\n\\boxed{{{n}}}\n\\]", "Answer: $\\boxed{{{n}}}$", "The answer is {n}%.",
    "so {n}", "#### {n}", "The answer is \\({n}\\)", "$${n}$$", "Answer: {n} apples", "answer is$ {n}$",
    "\\boxed{{ {n} }} .", "Answer = {n}", "The answer is: **{n}**.", "*Answer*: {n}", "The answer is *{n}*.",
]
NUMBERS = ["42", "-7", "0.50", "1,080", "1,22", "0,111", "007", "12345678901234567", "3.14159", "1,234,567.5", "0"]


def test_plain_numbers_are_read_as_math_verify_reads_them():
    # The fast path settles a row without math-verify, so its reading must be math-verify's, exactly.
    settled = 0
    for prefix, ending, number in itertools.product(PREFIXES, ENDINGS, NUMBERS):
        region = answer_region(prefix + ending.format(n=number))
        value = plain_number(region)
        if value is None:
            continue
        settled += 1
        for kind in ("answer_only" if is_answer_only(region) else "marked", "gold"):
            read = _parse(region, kind)
            assert read and not isinstance(read[0], str) and read[0].is_Number, (kind, region, read)
            assert Fraction(str(read[0])) == value, (kind, region, read)
    assert settled > 800  # the fast path does cover the common shapes


@pytest.mark.parametrize(
    ("region", "expected"),
    [(r"$k = \frac{1}{3}$", True), ("28 %", True), (r"$(1, +\infty)$", True), (r"$5 \geq x$", True),
     ("x = 5", True), ("42 apples", True), ("forty three", False), ("I think 42", False), ("1\n2", False)],
)
def test_answer_only_completions(region, expected):
    assert is_answer_only(region) == expected


@pytest.mark.parametrize(
    ("region", "expected"),
    [("The answer is 42.", True), (r"\boxed{x}", True), ("Final Answer: $x$", True), ("The final answer is 7", True),
     ("so we get 42", False), ("The answer is forty", False), ("The answer is None", False), ("", False)],
)
def test_a_final_answer_must_be_stated(region, expected):
    assert states_answer(region) == expected


@pytest.mark.parametrize(
    ("solution", "expected"),
    [(r"2\sqrt{2}", r"$2\sqrt{2}$"), (r"\text{(C)}", r"$\text{(C)}$"), ("42", "$42$"), ("forty three", "forty three"),
     (r"$\boxed{2}, \boxed{3}$", r"$\boxed{2}, \boxed{3}$"), ("Sold 9.\n#### 1,080", "Sold 9.\nThe final answer is 1,080"),
     ("10 inches", "10 inches"), ("  ", None)],
)
def test_gold_text_puts_bare_latex_in_delimiters(solution, expected):
    assert gold_text(solution) == expected


@pytest.mark.parametrize("text", ["\\( " * 100_000, "answer: " * 100_000, "1" + " " * 500_000 + "x", "$" * 10**6])
def test_degenerate_texts_cost_milliseconds(text):
    start = time.perf_counter()
    region = answer_region(text)
    states_answer(region), plain_number(region), is_answer_only(region), gold_text(text)
    assert time.perf_counter() - start < 0.5  # linear in a bounded tail: a quadratic pass would take minutes
