"""The `math` reward against math-verify's own `parse` + `verify` (default configurations) on public answer formats.

Every case carries the truth (is the completion's final answer right? None: the gold is no math answer) and, where
our verdict differs from math-verify's on the same strings, the deliberate difference that explains it. Each
difference is checked twice: math-verify given the input as our policy reads it agrees with us, and
docs/rewards.md documents it by name.
"""

import re
from pathlib import Path

import pytest
from math_verify import parse, verify

from rewards.math_accuracy import MathReward

NUMINA = r"Solving $x^2-5x+6=0$ gives $x = 2$ or $x = 3$. So the solutions are $\boxed{2}$ and $\boxed{3}$."
MATH_SOLUTION = r"We have $2+2=4$ apples, so there are $\boxed{4}$ apples."
GSM8K_SOLUTION = "Janet has 3 ducks; each lays 6 eggs, so 3 * 6 = <<3*6=18>>18.\n#### 18"


def unthought(text: str) -> str:
    return text.rpartition("</think>")[2]


def dollars(text: str) -> str:
    return f"${text}$"


def hashes_as_final(text: str) -> str:
    return text.replace("#### ", "The final answer is ")


def unbold(text: str) -> str:
    return text.replace("**", "")


# The deliberate differences: name -> how math-verify must be given (gold, completion) to read them as we do;
# None where the difference is the verdict itself.
DIFFERENCES = {
    "marked": None,  # an unmarked number earns nothing (math-verify takes the last number anywhere)
    "think": lambda gold, completion: (gold, unthought(completion)),
    "hashes": lambda gold, completion: (hashes_as_final(gold), hashes_as_final(completion)),
    "bold": lambda gold, completion: (gold, unbold(completion)),
    "bare_gold": lambda gold, completion: (dollars(gold), completion),
    "not_math": None,  # a gold with no readable answer scores None (math-verify: False)
}

# (completion, gold, truth, difference)
CASES = [
    # MATH / MATH-500: LaTeX golds, boxed answers
    (r"We get $x = \frac{1}{3}$. Thus the answer is $\boxed{\frac{1}{3}}$.", r"\frac{1}{3}", True, None),
    (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}", True, None),
    (r"\boxed{0.75}", r"\frac{3}{4}", True, None),
    (r"\boxed{\frac{1}{4}}", r"\frac{3}{4}", False, None),
    (r"\boxed{4}", MATH_SOLUTION, True, None),
    (r"\boxed{5}", MATH_SOLUTION, False, None),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", True, "bare_gold"),
    (r"\boxed{2}", r"2\sqrt{2}", False, "bare_gold"),  # math-verify reads this gold as 2
    (r"The answer is $\boxed{(1,+\infty)}$", r"(1,+\infty)", True, "bare_gold"),
    (r"The answer is $\boxed{[1,+\infty)}$", r"(1,+\infty)", False, None),
    (r"$\boxed{\text{(C)}}$", r"\text{(C)}", True, "bare_gold"),
    (r"\boxed{(x+1)^2}", "x^2+2x+1", True, "bare_gold"),
    (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", True, "bare_gold"),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", True, "bare_gold"),
    (r"\boxed{50\%}", "0.5", True, None),
    (r"\boxed{x = 5}", "5", True, None),
    (r"\boxed{10}", r"10 \text{ inches}", True, None),
    # answer-only completions with spaces
    (r"$k = \frac{1}{3}$", r"\frac{1}{3}", True, None),
    (r"$f(y) = y$", "$f(y) = y$", True, None),
    ("28 %", r"28\%", True, None),
    (r"$(1, +\infty)$", r"(1,+\infty)", True, "bare_gold"),
    (r"$5 \geq x$", r"x \leq 5", True, "bare_gold"),
    (r"$5 \geq x$", r"$x \leq 5$", True, None),
    (r"$5 \leq x$", r"$x \leq 5$", False, None),
    ("42", "42", True, None),
    # NuminaMath: multi-part boxed answers are sets
    (r"\boxed{3}", r"$\boxed{2}, \boxed{3}$", False, None),
    (r"The solutions are $\boxed{2}$ and $\boxed{3}$.", r"$\boxed{2}, \boxed{3}$", True, None),
    (r"\boxed{3, 2}", NUMINA, True, None),
    (r"\boxed{3}", NUMINA, False, None),
    (r"\boxed{2}, \boxed{3}", "3", False, None),
    # GSM8K
    ("3 ducks times 6 eggs is 18.\n#### 18", GSM8K_SOLUTION, True, None),
    ("#### 17", GSM8K_SOLUTION, False, None),
    ("#### 18\nThat took 3 steps.", GSM8K_SOLUTION, True, "hashes"),
    ("The answer is 1,000 dollars.", "#### 1000", True, None),
    # AIME: integers, zero-padded answers
    (r"The final answer is $\boxed{073}$", "73", True, None),
    (r"\boxed{204}", "204", True, None),
    (r"\boxed{25}", "204", False, None),
    # Minerva
    ("Final Answer: The final answer is $7$. I hope it is correct.", "7", True, None),
    (r"Final Answer: The final answer is $\frac{1}{2}$. I hope it is correct.", "$0.5$", True, None),
    ("Final Answer: The final answer is $8$. I hope it is correct.", "7", False, None),
    # "Answer: x" and stated answers
    ("Answer: 42", "42", True, None),
    (r"Answer: $\frac{3}{4}$", "0.75", True, None),
    ("Final Answer: 7 apples are left.", "7", True, None),
    (r"So \boxed{5}. Wait, 3+4=7. The final answer is 7.", "7", True, None),
    (r"So \boxed{5}. Wait, 3+4=7. The final answer is 7.", "5", False, None),
    ("The answer is 41", "42", False, None),
    ("The answer is: **42**.", "42", True, None),
    ("The answer is **42**, found in 3 steps.", "42", True, "bold"),
    ("The answer is **43**.", "42", False, None),
    # decimal commas and thousands separators
    ("The answer is 0,111", "0.111", True, None),
    ("The answer is 1,22", "1.22", True, None),
    (r"The answer is \boxed{1,000}", "1000", True, None),
    (r"The answer is $\boxed{\$18}$.", "18", True, None),
    # golds that are no math answer
    ("The answer is 43.", "forty three", None, "not_math"),
    ("forty three", "forty three", None, "not_math"),
    # unmarked numbers and reasoning
    ("After adding we get 42 in total", "42", True, "marked"),
    ("I think it is 42, or maybe 41", "41", False, "marked"),
    (r"<think>\boxed{42}</think> The answer is 7.", "42", False, "think"),
    (r"<think>Is it 7? No.</think> The answer is $\boxed{6}$.", "6", True, None),
]


@pytest.fixture(scope="module")
def verdicts():
    reward = MathReward(timeout=30)  # agreement is checked here, not speed: no timeout on a loaded machine
    scores = reward(completions=[c for c, *_ in CASES], solution=[g for _, g, *_ in CASES])
    assert reward.failures == 0
    return scores


def math_verify_says(gold: str, completion: str) -> bool:
    return verify(parse(gold), parse(completion))


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=lambda c: str(c)[:40] if isinstance(c, tuple) else c)
def test_verdicts_agree_with_math_verify_except_documented_differences(verdicts, index, case):
    completion, gold, _, difference = case
    ours = verdicts[index]
    theirs = math_verify_says(gold, completion)
    if difference is None:
        assert ours is not None and bool(ours) == theirs
        return
    assert ours is None or bool(ours) != theirs, f"no difference here: drop '{difference}'"
    if difference == "not_math":
        assert ours is None
    elif difference == "marked":
        assert ours == 0.0 and theirs
    else:
        assert bool(ours) == math_verify_says(*DIFFERENCES[difference](gold, completion))


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=lambda c: str(c)[:40] if isinstance(c, tuple) else c)
def test_no_false_positives_and_truth_where_an_answer_is_marked(verdicts, index, case):
    _, _, truth, difference = case
    ours = verdicts[index]
    if truth is None:
        assert ours is None
    elif difference == "marked":
        assert ours == 0.0  # right or wrong, an unmarked answer earns nothing
    else:
        assert ours == float(truth)


def test_every_difference_is_documented_with_an_example():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "rewards.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", docs, flags=re.MULTILINE))
    assert set(DIFFERENCES) <= documented
    assert {d for *_, d in CASES if d} == set(DIFFERENCES)  # each has a case here
