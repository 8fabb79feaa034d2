"""Builtin offline task generators: every row is verifiable (`solution`, or `tests` + `entry_point`).

Tasks: `arithmetic` (column add/sub/mul working), `word_problems`, `python_functions`, `text_tasks`. Rows are R1
style (`<think>` short working `</think>` then `The answer is \\boxed{x}.`, or a ```python block for code), seeded,
and split into `train` / `heldout` by a hash of the canonical problem, so the splits never overlap.

>>> from data_tools.generators import generate
>>> row = generate("arithmetic", 1, seed=0, split="heldout")[0]
>>> sorted(row)
['domain', 'entry_point', 'id', 'messages', 'prompt', 'solution', 'source', 'tests']
"""

from data_tools.generators.problem import HELDOUT_FRACTION, SPLITS, Problem, split_of
from data_tools.generators.registry import TASKS, Task, generate, get_task, iter_rows, make_config, prompt_dataset

__all__ = [
    "HELDOUT_FRACTION",
    "SPLITS",
    "TASKS",
    "Problem",
    "Task",
    "generate",
    "get_task",
    "iter_rows",
    "make_config",
    "prompt_dataset",
    "split_of",
]
