import json
import multiprocessing
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rewards.answer_extraction import final_answer, gold_answer
from rewards.math_accuracy import MathReward, verify_answers
from tests.conftest import GSM8K, needs_gsm8k



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
    ],
)
def test_wrong_or_missing_answers_score_zero(math_reward, completion, solution):
    assert math_reward(completions=[completion], solution=[solution]) == [0.0]


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


def test_fast_paths_agree_with_math_verify():
    # Equal decimals short-circuit to 1 and distinct small integers to 0; math-verify must say the same.
    pairs = [("1080", "1080.0"), ("0.50", "0.5"), ("-3", "-3"), ("41", "42"), ("-7", "7"), ("100", "1000")]
    reward = MathReward()
    fast = reward(completions=[rf"\boxed{{{a}}}" for a, _ in pairs], solution=[g for _, g in pairs])
    assert fast == [float(verify_answers(g, a)) for a, g in pairs] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_answers_naming_no_number_score_zero_for_integer_golds_without_math_verify(monkeypatch):
    # A weak model's noise: math-verify says no to each (slowly); the reward says so without asking it.
    pairs = [("None", "85"), ("auE the", "479"), ("one", "1"), ("pi", "3"), ("ft", "478")]
    assert [verify_answers(g, a) for a, g in pairs] == [False] * len(pairs)
    reward = MathReward()
    monkeypatch.setattr(reward, "_verifier", lambda: pytest.fail("sent to math-verify"))
    assert reward(completions=[f"The answer is {a}" for a, _ in pairs], solution=[g for _, g in pairs]) == [0.0] * 5


@needs_gsm8k
def test_all_gsm8k_gold_answers_verify_and_shifted_ones_do_not(math_reward):
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    assert len(rows) == 1319
    golds = [gold_answer(row["answer"]) for row in rows]
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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        ("<think>#### 3</think> final answer: **12**.", "12"),
        ("The answer is: $x = 2$", "x = 2"),
        ("The final answer is 3.5. I hope it is correct.", "3.5"),
        ("Many words without any conclusion at all here.", None),
        (r"so the result is \boxed{unclosed and so on", None),
    ],
)
def test_final_answer_extraction(text, expected):
    assert final_answer(text) == expected


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
