"""The builtin task registry and the functions that turn sampled problems into canonical rows."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from data_tools.generators import arithmetic, python_functions, text_tasks, word_problems
from data_tools.generators.problem import SPLITS, Problem, key_digest, split_of
from posttrain.errors import UserError

# A split's unique problems run out (small knobs, many rows): give up after this many misses in a row.
_MAX_MISSES = 10_000


@dataclass(frozen=True)
class Task:
    """A builtin task: the domain its rows carry, its difficulty config class, and its sampler."""

    domain: str
    config: type
    sample: Callable[[random.Random, Any], Problem]


TASKS: dict[str, Task] = {
    "arithmetic": Task("math", arithmetic.ArithmeticConfig, arithmetic.sample),
    "word_problems": Task("math", word_problems.WordProblemsConfig, word_problems.sample),
    "python_functions": Task("code", python_functions.PythonFunctionsConfig, python_functions.sample),
    "text_tasks": Task("text", text_tasks.TextTasksConfig, text_tasks.sample),
}


def get_task(name: str) -> Task:
    """The registered task `name`; an unknown name raises ValueError listing the valid ones."""
    if name not in TASKS:
        raise UserError(f"unknown builtin task {name!r}; valid tasks: {sorted(TASKS)}")
    return TASKS[name]


def make_config(task: str, options: dict[str, Any] | None = None) -> Any:
    """The task's difficulty config from `options`; an unknown option raises ValueError listing the valid ones.

    >>> make_config("arithmetic", {"max_digits": 2}).max_digits
    2
    """
    config_cls = get_task(task).config
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options or {}) - names)
    if unknown:
        raise UserError(f"builtin task {task!r}: unknown option(s) {unknown}; valid options: {sorted(names)}")
    return config_cls(**(options or {}))


def iter_rows(task: str, n: int, seed: int = 0, split: str = "train", **options: Any) -> Iterator[dict[str, Any]]:
    r"""Yield `n` distinct problems of builtin `task` from `split` as canonical rows, deterministically for a seed.

    Rows: `id` (`<task>-<hash of the problem>`: stable across seeds and calls), `domain`, `source`
    (`builtin:<task>`), `messages` (user prompt, assistant R1-style answer), `prompt` (the user text),
    `solution` (final answer) or `tests` + `entry_point` (HumanEval-style `check(candidate)`), None where absent.
    `options` are the task's difficulty knobs (see its config class).

    >>> row = next(iter_rows("arithmetic", 1, seed=0))
    >>> row["source"], row["domain"], row["messages"][0]["content"] == row["prompt"]
    ('builtin:arithmetic', 'math', True)
    """
    spec = get_task(task)
    if split not in SPLITS:
        raise UserError(f"builtin task {task!r}: split must be one of {list(SPLITS)}, got {split!r}")
    if n < 0:
        raise UserError(f"builtin task {task!r}: the number of rows must be >= 0, got {n}")
    config = make_config(task, options)
    rng = random.Random(f"{task}|{split}|{seed}")  # str seeds hash with sha512: the same on every platform
    seen: set[str] = set()
    misses = 0
    while len(seen) < n:
        problem = spec.sample(rng, config)
        digest = key_digest(task, problem.key)
        if digest in seen or split_of(task, problem.key) != split:
            misses += 1
            if misses > _MAX_MISSES:
                raise UserError(
                    f"builtin task {task!r}: found only {len(seen)} distinct {split} problems of the {n} asked for "
                    f"with options {options or {}}; ask for fewer rows or raise the difficulty knobs"
                )
            continue
        misses = 0
        seen.add(digest)
        yield {
            "id": f"{task}-{digest[:16]}",
            "domain": spec.domain,
            "source": f"builtin:{task}",
            "messages": [
                {"role": "user", "content": problem.prompt},
                {"role": "assistant", "content": problem.response},
            ],
            "prompt": problem.prompt,
            "solution": problem.solution,
            "tests": problem.tests,
            "entry_point": problem.entry_point,
        }


def generate(task: str, n: int, seed: int = 0, split: str = "train", **options: Any) -> list[dict[str, Any]]:
    r"""`n` canonical rows of builtin `task` from `split` as a list (see `iter_rows` for the row schema).

    >>> rows = generate("arithmetic", 2, seed=0, split="heldout", ops=["add"])
    >>> [r["solution"] for r in rows] == [str(eval(r["prompt"][8:-1])) for r in rows]
    True
    """
    return list(iter_rows(task, n, seed=seed, split=split, **options))


def prompt_dataset(
    tasks: str | Sequence[str], n: int, seed: int = 0, split: str = "heldout", chat: bool = True,
    unlabeled: Sequence[str] = (), unlabeled_n: int | None = None, **options: Any
):
    """A `datasets.Dataset` of prompts for GRPO or eval: `n` rows per task, columns `prompt`, `solution`, `tests`,
    `entry_point`, `id`, `domain`, `source`, `reference` (the generator's worked answer, for the `steps` reward);
    `prompt` is a one-message user conversation when `chat` (so trainers apply the chat template), else the user
    text. `unlabeled` tasks add `unlabeled_n` (default `n`) rows each, drawn with `seed + 1` (mostly other problems
    where a task is in both lists), without labels (`solution`, `tests`, `entry_point`, `reference` None): prompts
    for rewards that read no gold, such as `vote`. `options` apply to a single task only.

    >>> ds = prompt_dataset("arithmetic", 3, split="heldout", unlabeled=["arithmetic"], unlabeled_n=2)
    >>> ds.num_rows, ds[0]["prompt"][0]["role"], ds[0]["solution"] is None, ds[3]["solution"] is None
    (5, 'user', False, True)
    >>> ds[0]["prompt"] != ds[3]["prompt"]
    True
    """
    from datasets import Dataset

    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if options and len(names) != 1:
        raise UserError(f"prompt_dataset: options {sorted(options)} apply to one task, got tasks {names}")
    columns: dict[str, list[Any]] = {k: [] for k in ("prompt", "solution", "tests", "entry_point", "id", "domain",
                                                      "source", "reference")}
    if options and unlabeled and list(unlabeled) != names:
        raise UserError(f"prompt_dataset: options {sorted(options)} apply to one task, got unlabeled {list(unlabeled)}")
    runs = [(name, n, seed, True) for name in names]
    runs += [(name, n if unlabeled_n is None else unlabeled_n, seed + 1, False) for name in unlabeled]
    for name, rows, task_seed, labelled in runs:
        for row in iter_rows(name, rows, seed=task_seed, split=split, **options):
            row["prompt"] = [{"role": "user", "content": row["prompt"]}] if chat else row["prompt"]
            row["reference"] = row["messages"][-1]["content"]
            if not labelled:
                row.update(solution=None, tests=None, entry_point=None, reference=None)
            for key, values in columns.items():
                values.append(row[key])
    return Dataset.from_dict(columns)
