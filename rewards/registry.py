"""Resolve reward specs to callables: builtins, plugins, `module:function`, `file.py:function`, dict specs.

Builtins and plugins are imported only when asked for, so listing them never imports torch or sympy.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from rewards.base import Reward, RewardStats, Score, log_failure_rate

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "posttrain.rewards"
RewardFunc = Callable[..., list[Score]]

BUILTINS: dict[str, tuple[str, str]] = {
    "math": ("rewards.math_accuracy:MathReward", "final answer equals column `solution` (math-verify)"),
    "code": ("rewards.code_execution:CodeReward", "fraction of column `tests` passed in the local sandbox"),
    "text": ("rewards.text_answer:TextAnswerReward", "final answer equals column `solution` as text (no math)"),
    "format": ("rewards.think_format:FormatReward", "R1 format: <think>...</think> then an answer"),
    "length": ("rewards.length_shaping:LengthReward", "cosine length-scaled correctness, overlong penalty"),
    "repetition": ("rewards.repetition:RepetitionReward", "n-gram repetition penalty"),
    "steps": ("rewards.reference_steps:StepsReward", "working lines shared with column `reference`, in order"),
    "reward_model": ("rewards.reward_model:RewardModelReward", "scalar score from a sequence-classification model"),
    "judge": ("rewards.judge:JudgeReward", "generative judge with a rubric (local model or chat endpoint)"),
    "vote": ("rewards.vote:VoteReward", "agrees with its group's majority final answer (self-consistency, no gold)"),
    "self_judge": ("rewards.self_judge:SelfJudgeReward", "the policy itself grades each completion k times against a "
                   "constitution"),
}


@dataclass(frozen=True)
class RewardInfo:
    """One line of `posttrain rewards list`."""

    name: str
    target: str
    origin: str  # "builtin" or "plugin (<distribution>)"
    summary: str


def list_rewards() -> list[RewardInfo]:
    """Builtins, then installed plugins (entry-point group `posttrain.rewards`), without importing any of them.

    >>> [info.name for info in list_rewards()][:3]
    ['math', 'code', 'text']
    """
    infos = [RewardInfo(name, target, "builtin", summary) for name, (target, summary) in BUILTINS.items()]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        infos.append(RewardInfo(ep.name, ep.value, f"plugin ({dist})", ""))
    return infos


def get_reward(spec: str | dict[str, Any] | RewardFunc) -> RewardFunc:
    """Resolve `spec` to a reward function with TRL's signature and `__name__` set.

    `spec` is a builtin name (`math`, `code`, ...), an installed plugin's name, `package.module:function`,
    `path/to/file.py:function`, a callable, or a dict `{"name": <any of those>, **params}` whose params
    configure the target (a builtin's options, or the arguments of a plugin's factory). Without params a class
    is instantiated and a function is the reward itself. Functions that are not builtins are wrapped so that an
    exception fails their batch (scored None and counted in `.stats`) instead of stopping training.

    >>> get_reward("math").__name__, get_reward({"name": "code", "timeout": 3}).timeout
    ('math', 3)
    """
    if isinstance(spec, (Reward, _Guarded)):
        return spec
    if callable(spec) and not isinstance(spec, type):
        return _Guarded(spec)
    params: dict[str, Any] = {}
    if isinstance(spec, dict):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise UserError("a reward spec dict needs a string 'name' (e.g. {'name': 'code', 'timeout': 3}), "
                            f"got {spec!r}")
    elif isinstance(spec, str):
        name = spec
    else:
        raise UserError(f"a reward spec is a name, 'module:function', 'file.py:function' or a dict, got {spec!r}")
    target = _load(name)
    try:
        reward = target(**params) if params or isinstance(target, type) else target
    except TypeError as exc:
        options = sorted(f.name for f in dataclasses.fields(target)) if dataclasses.is_dataclass(target) else []
        raise UserError(f"reward {name!r} rejected params {sorted(params)}: {exc}"
                        + (f"; its options are {options}" if options else "")) from exc
    if not callable(reward):
        raise UserError(f"reward {name!r} resolved to {reward!r}, which is not callable")
    if not isinstance(reward, Reward):
        reward = _Guarded(reward, name=name.rpartition(":")[2])
    return reward


def _load(name: str) -> Any:
    """Import the object a name points at, trying builtin, plugin, file path and module path in that order."""
    if name in BUILTINS:
        return _import(BUILTINS[name][0])
    plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name in plugins:
        return plugins[name].load()
    path, sep, attr = name.rpartition(":")
    if sep and path.endswith(".py"):
        file = Path(path)
        if not file.is_file():
            raise UserError(f"reward {name!r}: file {file} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"posttrain_reward_{file.stem}", file)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return _attr(module, attr, name)
    if sep:
        return _import(name)
    known = sorted(BUILTINS) + sorted(plugins)
    raise UserError(f"unknown reward {name!r}: use one of {known}, 'package.module:function' or "
                    "'path/to/file.py:function'")


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"reward {target!r}: cannot import module {module_name!r} ({exc})") from exc
    return _attr(module, attr, target)


def _attr(module: Any, attr: str, spec: str) -> Any:
    if not hasattr(module, attr):
        public = sorted(a for a in vars(module) if not a.startswith("_"))
        raise UserError(f"reward {spec!r}: {module.__name__} has no attribute {attr!r}; it has {public}")
    return getattr(module, attr)


class _Guarded:
    """Wraps a user reward function: same call, failures counted and turned into None for the batch."""

    def __init__(self, func: RewardFunc, name: str | None = None) -> None:
        self.func = func
        self.__name__ = getattr(func, "__name__", None) or name or "reward"
        self.required_columns = tuple(getattr(func, "required_columns", ()))
        self.stats = RewardStats()

    @property
    def failures(self) -> int:
        """How many rows failed since this reward was built."""
        return self.stats.failures

    def __call__(self, prompts: Any = None, completions: Sequence[Any] = (), **columns: Any) -> list[Score]:
        try:
            scores = list(self.func(prompts=prompts, completions=completions, **columns))
            if len(scores) != len(completions):
                raise ValueError(f"returned {len(scores)} scores for {len(completions)} completions")
        except Exception as exc:  # noqa: BLE001 - a failing plugin must not stop training
            if self.stats.record(len(completions), [exc] * len(completions)):
                logger.warning("reward %r failed (%s); its batch scores None", self.__name__, self.stats.first_error)
            log_failure_rate(columns.get("log_metric"), self.__name__, len(completions), len(completions))
            return [None] * len(completions)
        self.stats.record(len(completions), [])
        log_failure_rate(columns.get("log_metric"), self.__name__, 0, len(completions))
        return scores


def check_columns(funcs: Iterable[RewardFunc], column_names: Iterable[str],
                  rows: Iterable[dict[str, Any]] = ()) -> None:
    """Raise ValueError, before training, when a reward's `required_columns` are not all in `column_names`, or
    when a value in `rows` (e.g. the dataset itself) is malformed for a reward that checks its columns.

    >>> check_columns([get_reward("math")], ["prompt", "solution"], rows=[{"solution": "42"}])
    >>> check_columns([get_reward("code")], ["prompt", "solution"])
    Traceback (most recent call last):
    ...
    posttrain.errors.UserError: reward 'code' needs column 'tests', which the dataset lacks (it has [...])
    """
    funcs, names = list(funcs), list(column_names)
    for func in funcs:
        for column in getattr(func, "required_columns", ()):
            if column not in names:
                raise UserError(f"reward {func.__name__!r} needs column {column!r}, which the dataset lacks "
                                f"(it has {sorted(names)})")
    checked = [f for f in funcs if isinstance(f, Reward)]
    required = {(f.__name__, c) for f in funcs for c in getattr(f, "required_columns", ())}
    filled: set[tuple[str, str]] = set()
    seen_rows = False
    for index, row in enumerate(rows):
        seen_rows = True
        filled |= {(name, column) for name, column in required if row.get(column) is not None}
        for func in checked:
            for column in func.required_columns + func.optional_columns:
                if row.get(column) is not None:
                    func.validate(column, index, row[column])
    # A column that exists but is empty everywhere (e.g. `tests` in a math-only set) leaves the reward nothing
    # to score: every row would be None, which is a configuration mistake, not a property of the completions.
    for name, column in sorted(required - filled) if seen_rows else ():
        raise UserError(f"reward {name!r} needs column {column!r}, which is empty (None) in every row of the "
                        "dataset: give rows that have it, or drop the reward")


def bind_policy(funcs: Iterable[RewardFunc], model: Any, tokenizer: Any) -> None:
    """Hand the model being trained (the live module, not a copy) to the rewards that grade with it (`self_judge`);
    the others are left alone. The GRPO recipe calls this once the trainer is built."""
    for func in funcs:
        if hasattr(func, "bind_policy"):
            func.bind_policy(model, tokenizer)

