import json
import multiprocessing
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rewards import get_reward
from rewards.math_accuracy import MathReward
from tests.conftest import GSM8K, needs_gsm8k



# Public answer formats: MATH / MATH-500 (bare LaTeX golds, `\boxed{}` answers), NuminaMath (multi-part boxed
# answers), GSM8K (`#### x`), AIME (integers), Minerva ("Final Answer: The final answer is ... I hope it is
# correct."), "Answer: x", and answer-only completions.
@pytest.mark.parametrize(
    ("completion", "solution"),
    [
        (r"<think>6*7</think> The answer is \boxed{42}.", "42"),
        ("Adding up: 18.\n#### 18", "#### 18"),
        ("The answer is 42", "42"),
        ("So the final answer is $\\frac{3}{4}$.", "0.75"),
        (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}"),
        (r"\boxed{1,000}", "1000"),
        ("The answer is 1,000 dollars.", "#### 1000"),
        (r"\boxed{x = 5}", "5"),
        (r"\boxed{\{2, 1\}}", r"\{1, 2\}"),
        (r"\boxed{[1, 2)}", "[1,2)"),
        (r"\boxed{\sqrt{8}}", r"2\sqrt{2}"),
        (r"\boxed{(x+1)^2}", "x^2+2x+1"),
        (r"\boxed{50\%}", "0.5"),
        (r"The answer is \boxed{\$18}.", "18"),
        ("42", "42"),
        (r"$k = \frac{1}{3}$", r"\frac{1}{3}"),
        (r"$f(y) = y$", r"f(y) = y"),
        ("28 %", r"28\%"),
        (r"$(1, +\infty)$", r"(1,+\infty)"),
        (r"$5 \geq x$", r"x \leq 5"),
        (r"The solutions are $\boxed{2}$ and $\boxed{3}$.", r"$\boxed{2}, \boxed{3}$"),
        (r"\boxed{3, 2}", r"Solving $x^2-5x+6=0$ gives $x=2$ or $x=3$, so $\boxed{2}, \boxed{3}$."),
        ("Final Answer: The final answer is $7$. I hope it is correct.", "7"),
        ("Final Answer: 7 apples are left.", "7"),
        (r"So \boxed{5}. Wait: 3+4=7, not 5. The final answer is 7.", "7"),
        ("The answer is 0,111", "0.111"),
        ("The answer is 1,22", "1.22"),
        ("The answer is: **42**.", "42"),
        (r"The final answer is $\boxed{073}$.", "73"),
        (r"**Final Answer**" + "\n" + r"\[\boxed{\text{(C)}}\]", r"\text{(C)}"),
        (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
    ],
)
def test_equivalent_answers_score_one(math_reward, completion, solution):
    assert math_reward(completions=[completion], solution=[solution]) == [1.0]


@pytest.mark.parametrize(
    ("completion", "solution"),
    [
        (r"\boxed{41}", "42"),
        ("#### 43", "Work.\n#### 42"),
        ("I think it is hard to say.", "42"),
        (r"<think>\boxed{42}</think> The answer is 7.", "42"),  # the answer after </think> is the final one
        (r"\boxed{\frac{1}{3}}", "0.5"),
        (r"\boxed{x^2}", "x^3"),
        (r"\boxed{3}", r"$\boxed{2}, \boxed{3}$"),  # one part of a two-part answer
        (r"\boxed{2}, \boxed{3}", "3"),  # hedging between answers
        (r"So \boxed{5}. Wait: 3+4=7, not 5. The final answer is 7.", "5"),  # the later, explicit answer counts
        ("After adding them all we get 42 in total.", "42"),  # no marked final answer
        ("I think it is 42, or maybe 41", "41"),
        ("The answer is 0,111", "111"),  # a decimal comma, not a thousands separator
        (r"\boxed{25}", "204"),
    ],
)
def test_wrong_or_missing_answers_score_zero(math_reward, completion, solution):
    assert math_reward(completions=[completion], solution=[solution]) == [0.0]


@pytest.mark.parametrize("solution", ["forty three", "The answer is forty three.", "east"])
def test_golds_math_verify_cannot_read_are_not_scored(math_reward, solution):
    completions = ["The answer is 43.", "forty three", r"\boxed{43}", "nothing stated"]
    assert math_reward(completions=completions, solution=[solution] * 4) == [None] * 4
    assert math_reward.failures == 0


def test_length_leaves_unreadable_golds_unscored():
    # `length` must not reward length alone on a row nobody can verify.
    length = get_reward({"name": "length", "max_len": 100})
    assert length(completions=["The answer is 43.", "w " * 50], solution=["forty three"] * 2) == [None, None]
    assert length(completions=[r"\boxed{43}"], solution=["43"])[0] > 0


def test_chat_message_completions_are_read(math_reward):
    completions = [[{"role": "assistant", "content": r"\boxed{7}"}]]
    prompts = [[{"role": "user", "content": "3+4?"}]]
    assert math_reward(prompts=prompts, completions=completions, solution=["7"]) == [1.0]


def test_rows_without_a_solution_are_not_applicable(math_reward):
    assert math_reward(completions=["42", "42"], solution=[None, "  "]) == [None, None]


def test_missing_solution_column_names_reward_and_column(math_reward):
    with pytest.raises(ValueError, match=r"reward 'math' needs column 'solution'.*\['tests'\]"):
        math_reward(completions=["42"], tests=["assert True"])


def test_malformed_solution_names_column_and_row(math_reward):
    with pytest.raises(ValueError, match=r"reward 'math': column 'solution' in row 1 is \['4'\]; expected a string"):
        math_reward(completions=["4", "4"], solution=["4", ["4"]])


def test_answers_naming_no_number_score_zero_without_math_verify(monkeypatch):
    # A weak model's noise: nothing math-verify could read, so no round trip to learn that.
    reward = MathReward()
    monkeypatch.setattr(reward, "_verifier", lambda: pytest.fail("sent to math-verify"))
    completions = ["The answer is None", "auE the answer", "so we get 42", "one", ""]
    assert reward(completions=completions, solution=["85", "#### 479", "42", "1", "7"]) == [0.0] * 5


def test_plain_numbers_are_settled_without_math_verify(monkeypatch):
    reward = MathReward()
    monkeypatch.setattr(reward, "_verifier", lambda: pytest.fail("sent to math-verify"))
    completions = [r"The answer is $\boxed{1,080}$.", "#### 41", "Answer: 0.50", "-3"]
    assert reward(completions=completions, solution=["Sold 9.\n#### 1080", "42", r"\boxed{0.5}", "-3"]) == [
        1.0, 0.0, 1.0, 1.0]


@needs_gsm8k
def test_all_gsm8k_gold_answers_verify_and_shifted_ones_do_not(math_reward):
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    assert len(rows) == 1319
    golds = [row["answer"].rpartition("####")[2].strip().replace(",", "") for row in rows]
    solutions = [row["answer"] for row in rows]
    as_hashes = [f"Let me compute.\n#### {g}" for g in golds]
    as_boxed = [rf"The answer is \boxed{{{g}}}." for g in golds]
    shifted = [str(int(g) + 1) for g in golds]
    assert math_reward(completions=as_hashes, solution=solutions) == [1.0] * 1319
    assert math_reward(completions=as_boxed, solution=solutions) == [1.0] * 1319
    assert math_reward(completions=[f"#### {s}" for s in shifted], solution=solutions) == [0.0] * 1319
    assert math_reward(completions=[rf"\boxed{{{s}}}" for s in shifted], solution=solutions) == [0.0] * 1319


PATHOLOGICAL = [
    r"\boxed{5^{5^{5^{5^{5}}}}}",  # math-verify issue #65: hangs forever without a bound
    r"\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}",
    r"\boxed{" + "1+" * 200_000 + "1}",
    "x" * 2_000_000 + " The answer is 3",
    r"\boxed{" + r"\frac{1}{" * 500 + "2" + "}" * 500 + "}",
]


def test_pathological_answers_return_zero_within_two_seconds():
    reward = MathReward(workers=len(PATHOLOGICAL))
    reward.start()  # workers up: their start is not a row's time
    start = time.monotonic()
    assert reward(completions=PATHOLOGICAL, solution=["4"] * len(PATHOLOGICAL)) == [0.0] * len(PATHOLOGICAL)
    assert time.monotonic() - start < 2.0


def test_timeouts_are_counted_with_the_first_message_and_the_pool_recovers():
    reward = MathReward(timeout=0.5, workers=1)
    scores = reward(completions=[r"\boxed{5^{5^{5^{5^{5}}}}}", r"\boxed{\frac{6}{4}}"], solution=["3", "1.5"])
    assert scores == [0.0, 1.0]
    assert reward.failures == 1
    assert reward.stats.first_error.startswith("TimeoutError")


def test_safe_from_threads(math_reward):
    def score(k: int) -> list:
        completions = [rf"\boxed{{\frac{{{k}}}{{2}}}}", rf"\boxed{{{k + 1}/2}}"]
        return math_reward(completions=completions, solution=[str(k / 2)] * 2)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(score, range(8)))
    assert results == [[1.0, 0.0]] * 8
    assert threading.active_count() >= 1


def _score_in_child(queue) -> None:
    reward = MathReward(workers=1)
    queue.put(reward(completions=[r"\boxed{\frac{1}{2}}", r"\boxed{3}"], solution=["0.5", "4"]))


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_safe_from_processes(math_reward, start_method):
    math_reward(completions=[r"\boxed{\frac{1}{2}}"], solution=["0.5"])  # the parent's pool is running
    context = multiprocessing.get_context(start_method)
    queue = context.Queue()
    child = context.Process(target=_score_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=60) == [1.0, 0.0]
    child.join(timeout=30)
    assert child.exitcode == 0


def test_final_answers_are_what_math_verify_reads(math_reward):
    completions = [r"<think>#### 3</think> final answer: **12**.", r"The answer is: $x = 2$",
                   "Final Answer: The final answer is $\\dfrac{3}{4}$. I hope it is correct.", "#### 1,080",
                   "Many words without any conclusion at all here.", r"so the result is \boxed{unclosed and so on"]
    assert math_reward.final_answers(completions) == ["12", "x = 2", r"\frac{3}{4}", "1080", None, None]


def test_pool_started_from_a_finished_thread_keeps_working():
    reward = MathReward(workers=1)
    thread = threading.Thread(target=reward, kwargs={"completions": [r"\boxed{\frac{1}{2}}"], "solution": ["0.5"]})
    thread.start()
    thread.join()
    assert reward(completions=[r"\boxed{\frac{1}{4}}"], solution=["0.25"]) == [1.0]
    assert reward.failures == 0


HUNG_PARENT = """
import sys
from rewards.math_accuracy import MathReward
reward = MathReward(timeout=600, workers=1)
reward.start()
print(reward._pool._workers[0].process.pid, flush=True)
reward(completions=[r"\\boxed{5^{5^{5^{5^{5}}}}}"], solution=["3"])
"""


def test_a_hung_worker_dies_with_its_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", HUNG_PARENT], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    time.sleep(0.3)  # the worker is now deep in the power tower
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists()
