"""The `vote` reward: self-consistency as the label. No gold answer is read for the reward.

TRL calls a reward once per batch with every completion of the batch; `GRPOTrainer` lays a prompt's
`num_generations` completions side by side, so a process sees whole groups when its per-device batch is a multiple
of `num_generations`. Here a group is every completion of the call with the same prompt (so a group split across
processes votes among the part a process sees, and a prompt that occurs twice in one batch votes once over both).

In each group the final answers are the `math` reward's (`MathReward.final_answers`: what math-verify reads, in its
bounded workers; plain numbers compared by value, so "4", "4.0" and "04" are one answer, anything else by its text). The answer
given by the most completions is the pseudo-label, and a completion scores 1.0 when its answer is the label, 0.0
otherwise (no answer at all included). A group has no label, and all its completions score None (no signal, left
out by TRL), when no completion states an answer, when the top answers tie (a coin flip would reward noise), or
when the top answer's share of the group is below `min_share`. With `unlabelled_only`, only prompts that come
without a `solution` vote (the others score None): beside a rule reward that checks the labelled ones.

Diagnostics, through TRL's `log_metric` when given: `vote/share` (the label's share of its group, averaged over
the groups with a label), `vote/labelled` (share of groups with a label) and, where a `solution` column exists,
`vote/label_accuracy` (labels equal to the gold answer, judged by the `math` reward; never part of the score).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from posttrain.errors import UserError
from rewards.answer_extraction import plain_number
from rewards.base import Reward, RowScores, Score
from rewards.model_inputs import prompt_text


def answer_key(answer: str | None) -> Any:
    """What votes are counted by: a plain number's value, else the stripped text; None for no answer.

    >>> answer_key("4.0") == answer_key("4"), answer_key(" x+1 "), answer_key(None)
    (True, 'x+1', None)
    """
    if answer is None:
        return None
    answer = answer.strip()
    value = plain_number(answer)
    return value if value is not None else answer


def pseudo_label(keys: list[Any], min_share: float = 0.0) -> tuple[Any, float]:
    """The majority answer key of one group and its share of the group; (None, share) when there is none (no answer,
    a tie for the top, or a share below `min_share`).

    >>> pseudo_label(["4", "4", "5", None]), pseudo_label(["4", "5"]), pseudo_label([None, None])
    (('4', 0.5), (None, 0.5), (None, 0.0))
    """
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, 0.0
    (top, n), *rest = counts.most_common(2) + [(None, 0)]
    share = n / len(keys)
    if rest[0][1] == n or share < min_share:
        return None, share
    return top, share


@dataclass
class VoteReward(Reward):
    r"""1.0 when a completion's final answer is its group's majority answer, 0.0 when not, None when the group has
    no majority (see the module docstring). Reads no gold; `solution`, if present, feeds a diagnostic only.

    >>> vote = VoteReward()
    >>> vote(prompts=["2+2?"] * 4 + ["3+3?"] * 2,
    ...      completions=[r"\boxed{4}", "The answer is 4.", r"\boxed{5}", "hmm", r"\boxed{6}", r"\boxed{7}"])
    [1.0, 1.0, 0.0, 0.0, None, None]
    >>> vote.last["share"], vote.last["labelled"]
    (0.5, 0.5)
    """

    name: ClassVar[str] = "vote"
    optional_columns: ClassVar[tuple[str, ...]] = ("solution",)

    min_share: float = field(default=0.0, metadata={"help": "Least share of its group the majority answer needs "
                                                            "(0: a strict plurality is enough)."})
    unlabelled_only: bool = field(
        default=False, metadata={"help": "Vote only on prompts that come without a `solution` (None elsewhere): the "
                                         "self-reward where a rule reward has no gold to check against."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.min_share <= 1:
            raise UserError(f"reward 'vote': min_share must be in [0, 1], got {self.min_share}")
        self.last: dict[str, float] = {}
        self._checker: Reward | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_checker": None}

    def __call__(self, prompts: Any = None, completions: Any = (), **columns: Any) -> list[Score]:
        scores = super().__call__(prompts, completions, **columns)
        log_metric = columns.get("log_metric")
        if callable(log_metric):
            for name, value in self.last.items():
                log_metric(f"vote/{name}", value)
        return scores

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        groups: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            if not (self.unlabelled_only and rows[i].get("solution") is not None):
                groups.setdefault(prompt_text(prompt), []).append(i)
        answers = self._math().final_answers(texts)
        keys = [answer_key(a) for a in answers]
        scores: list[Score | BaseException] = [None] * len(texts)
        shares, labels = [], []  # labels: (label's text, a member's gold)
        for members in groups.values():
            label, share = pseudo_label([keys[i] for i in members], self.min_share)
            if label is None:
                continue
            shares.append(share)
            voter = next(i for i in members if keys[i] == label)
            labels.append((answers[voter], rows[voter].get("solution")))
            for i in members:
                scores[i] = 1.0 if keys[i] == label else 0.0
        self.last = {"share": sum(shares) / len(shares) if shares else 0.0,
                     "labelled": len(shares) / len(groups) if groups else 0.0}
        gold = [(label, solution) for label, solution in labels if solution is not None]
        if gold:
            verdicts = self._math()(completions=[f"\\boxed{{{label}}}" for label, _ in gold],
                                    solution=[solution for _, solution in gold])
            judged = [v for v in verdicts if v is not None]
            if judged:
                self.last["label_accuracy"] = sum(judged) / len(judged)
        return scores

    def _math(self) -> Reward:
        if self._checker is None:
            from rewards.math_accuracy import MathReward

            self._checker = MathReward()
        return self._checker
