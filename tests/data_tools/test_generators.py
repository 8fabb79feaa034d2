"""Builtin generators: deterministic, verifiable, short, and with disjoint train / held-out splits."""

from __future__ import annotations

import re

import pytest

from data_tools.generators import TASKS, generate, iter_rows, prompt_dataset
from posttrain.tokenizer import build_tokenizer


def _boxed(text: str) -> str:
    return re.search(r"The answer is \\boxed\{(.*)\}\.$", text).group(1)


def _arithmetic_problem(prompt: str) -> tuple:
    a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", prompt).groups()
    a, b = int(a), int(b)
    return (op, min(a, b), max(a, b)) if op in "+*" else (op, a, b)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_train_and_heldout_never_share_a_problem(task):
    train = generate(task, 1500, seed=0, split="train")
    heldout = generate(task, 150, seed=0, split="heldout")
    assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    # Another seed draws other training problems, still none of them held out.
    assert not {r["id"] for r in generate(task, 1500, seed=1, split="train")} & {r["id"] for r in heldout}


def test_arithmetic_splits_are_disjoint_by_operands_not_only_by_id():
    train = {_arithmetic_problem(r["prompt"]) for r in generate("arithmetic", 5000, seed=3, max_digits=2)}
    heldout = {_arithmetic_problem(r["prompt"]) for r in generate("arithmetic", 500, seed=3, split="heldout",
                                                                     max_digits=2)}
    assert len(heldout) == 500 and not train & heldout


@pytest.mark.parametrize("task", sorted(TASKS))
def test_rows_are_seeded_unique_and_canonical(task):
    rows = generate(task, 200, seed=7)
    assert rows == generate(task, 200, seed=7)
    assert rows != generate(task, 200, seed=8)
    assert len({r["id"] for r in rows}) == 200
    for row in rows:
        assert row["source"] == f"builtin:{task}" and row["domain"] == TASKS[task].domain
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"] == row["prompt"]
        assert (row["solution"] is None) == (row["tests"] is not None) == (row["entry_point"] is not None)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_responses_are_r1_style_and_under_150_tokens(task):
    tokenizer = build_tokenizer()
    for row in generate(task, 300, seed=0):
        answer = row["messages"][1]["content"]
        assert answer.startswith("<think>\n") and "\n</think>\n" in answer
        assert len(tokenizer.apply_chat_template(row["messages"])["input_ids"]) < 150


def test_arithmetic_answers_and_working_are_right():
    for row in generate("arithmetic", 1000, seed=0, max_digits=3, mul_max_digits=(2, 2), allow_negative=True):
        a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", row["prompt"]).groups()
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        response = row["messages"][1]["content"]
        assert row["solution"] == _boxed(response) == str(value)
        for step in re.findall(r"^([\d+*-]+)=(\d+)", response, flags=re.M):
            assert eval(step[0]) == int(step[1])


def test_arithmetic_column_addition_writes_carries():
    rows = list(iter_rows("arithmetic", 200, ops=["add"]))
    assert all(r["prompt"].count("+") == 1 for r in rows)
    assert any("carry 1" in r["messages"][1]["content"] for r in rows)


@pytest.mark.parametrize("task", ["word_problems", "text_tasks"])
def test_solution_is_the_boxed_answer(task):
    for row in generate(task, 300, seed=0):
        assert _boxed(row["messages"][1]["content"]) == row["solution"]


def test_text_task_answers_are_right():
    for row in generate("text_tasks", 500, seed=2):
        prompt, solution = row["prompt"], row["solution"]
        if m := re.fullmatch(r"Reverse the string '(\w+)'\.", prompt):
            assert solution == m.group(1)[::-1]
        elif m := re.fullmatch(r"Convert '(\w+)' to uppercase\.", prompt):
            assert solution == m.group(1).upper()
        elif m := re.fullmatch(r"Sort these words alphabetically: (.*)\.", prompt):
            assert solution == ", ".join(sorted(m.group(1).split(", ")))
        elif m := re.fullmatch(r"Sort these numbers in ascending order: (.*)\.", prompt):
            assert solution == ", ".join(map(str, sorted(int(x) for x in m.group(1).split(", "))))
        else:
            letter, word = re.fullmatch(r"How many times does the letter '(\w)' appear in '(\w+)'\?", prompt).groups()
            assert solution == str(word.count(letter))


def test_python_references_pass_their_tests_and_wrong_code_fails():
    for row in generate("python_functions", 300, seed=0):
        code = re.search(r"```python\n(.*)```", row["messages"][1]["content"], flags=re.S).group(1)
        scope: dict = {}
        exec(f"{code}\n{row['tests']}\ncheck({row['entry_point']})\n", scope)
        with pytest.raises(AssertionError):
            exec(f"{row['tests']}\ncheck(lambda *args: object())\n", {})


def test_prompt_dataset_has_chat_prompts_and_verification_columns():
    ds = prompt_dataset(["arithmetic", "python_functions"], 5, seed=0, split="heldout")
    assert ds.num_rows == 10
    assert set(ds.column_names) == {"prompt", "solution", "tests", "entry_point", "id", "domain", "source",
                                    "reference"}
    assert ds[0]["reference"] == generate("arithmetic", 1, split="heldout")[0]["messages"][1]["content"]
    assert ds[0]["prompt"] == [{"role": "user", "content": generate("arithmetic", 1, split="heldout")[0]["prompt"]}]
    assert ds[9]["tests"].startswith("def check(candidate):")
    assert isinstance(prompt_dataset("text_tasks", 2, chat=False)[0]["prompt"], str)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: generate("algebra", 1), r"unknown builtin task 'algebra'; valid tasks: \['arithmetic'"),
        (lambda: generate("arithmetic", 1, split="test"), r"split must be one of \['train', 'heldout'\]"),
        (lambda: generate("arithmetic", 1, digits=4), r"unknown option\(s\) \['digits'\]; valid options"),
        (lambda: generate("arithmetic", 1, ops=["div"]), r"ops: \['div'\] must be a non-empty subset"),
        (lambda: generate("python_functions", 10**6), r"found only \d+ distinct train problems"),
    ],
)
def test_bad_generator_arguments_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_project_rewards_score_reference_answers_one():
    rewards = pytest.importorskip("rewards")
    for task, reward in (("arithmetic", "math"), ("word_problems", "math"), ("text_tasks", "text")):
        rows = generate(task, 20, seed=5)
        scores = rewards.get_reward(reward)(completions=[r["messages"][1]["content"] for r in rows],
                                            solution=[r["solution"] for r in rows])
        assert scores == [1.0] * len(rows), task
    code_rows = generate("python_functions", 5, seed=5)
    code_reward = rewards.get_reward({"name": "code", "timeout": 5})
    scores = code_reward(completions=[r["messages"][1]["content"] for r in code_rows],
                         tests=[r["tests"] for r in code_rows], entry_point=[r["entry_point"] for r in code_rows])
    assert scores == [1.0] * len(code_rows)
