"""Reward functions for GRPO, distillation (verification) and eval: the one verifier of the project.

A reward has TRL's signature, `fn(prompts, completions, **columns) -> list[float | None]`; completions are strings
or chat-message lists, and None means "not applicable to this row" (or "could not score", see `fallback`).

Public API:

- `get_reward(spec) -> RewardFunc`: a builtin name (`math`, `code`, `format`, `length`, `repetition`, `steps`,
  `reward_model`, `judge`, `vote`, `self_judge`), an installed plugin (entry-point group `posttrain.rewards`),
  `package.module:function`, `path/to/file.py:function`, or a dict `{"name": ..., **params}` configuring it
  (`{"name": "code", "timeout": 3}`).
- `check_columns(funcs, column_names, rows=())`: raise `UserError`, before training, if a reward's column is
  missing or (given the rows) one of its values is malformed.
- `list_rewards() -> list[RewardInfo]`: builtins and installed plugins.
- `bind_policy(funcs, model, tokenizer)`: give rewards that grade with the policy being trained (`self_judge`) the
  live model.

Every returned reward has `__name__` (TRL logs under it), `required_columns` (tuple of column names), and
`stats` (a `RewardStats`: `rows`, `failures`, `first_error`; `stats.as_dict()` for logging) with `failures` as a
shortcut. A reward that raises or times out on a row scores that row `fallback` (None unless configured; 0.0 for
`math` and `code`, where a hang is the completion's fault), counts it, and logs the first message once. Given
TRL's `log_metric` callback (GRPOTrainer passes it), each batch also logs `rewards/<name>/failure_rate`.

>>> from rewards import get_reward
>>> math_reward = get_reward("math")
>>> math_reward(completions=["<think>...</think> The answer is \\\\boxed{42}."], solution=["#### 42"])
[1.0]
"""

from rewards.base import Reward, RewardStats, completion_text
from rewards.registry import RewardFunc, RewardInfo, bind_policy, check_columns, get_reward, list_rewards

__all__ = [
    "Reward",
    "RewardFunc",
    "RewardInfo",
    "RewardStats",
    "bind_policy",
    "check_columns",
    "completion_text",
    "get_reward",
    "list_rewards",
]
