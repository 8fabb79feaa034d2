"""The `self_judge` reward: the policy being trained grades its own completions against a written constitution.

Self-rewarding for prompts with no checkable answer: the judge is the policy itself with its current weights, not
a frozen copy. The GRPO recipe hands the trained model to the reward (`bind_policy`), so every call grades with the
weights as training has moved them. Each completion is put into the `rubric` (with the `constitution`, the prompt
and any dataset column it names), the policy answers it `votes` times (sampled, batched through
`posttrain.generation.generate`, the project's one generation function) and the mean of the parsed verdicts,
divided by `scale`, is the reward. Votes without a score in range are left out and counted in `unparseable`; a
completion with no parseable vote scores None and counts as a failure.

Generation runs in eval mode under `torch.inference_mode` (no gradients, no router-load counting for the bias
update) with torch's random state saved and restored, so judging does not shift the trainer's own sampling.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, ClassVar

from posttrain.errors import UserError
from rewards.base import Reward, RowScores, Score
from rewards.judge import UnparseableVerdict, parse_verdict
from rewards.model_inputs import prompt_text

DEFAULT_CONSTITUTION = """1. The answer responds to the question that was asked.
2. Every step of its reasoning is correct.
3. It ends with one clearly stated final answer.
4. It is concise: no repetition, no filler."""

DEFAULT_RUBRIC = """Grade the answer by the principles below.

Principles:
{constitution}

Question:
{prompt}

Answer:
{completion}

Reply with one line "Score: N", where N is an integer from 0 to 10."""


@dataclass
class SelfJudgeReward(Reward):
    """The policy's mean verdict over `votes` samples on the `rubric`, scaled to [0, 1]; None when no vote parses.

    Needs the policy: `recipes/grpo.py` binds the trained model (`rewards.bind_policy`); elsewhere call
    `reward.bind_policy(model, tokenizer)` first, or every row fails with a message saying so.

    Example: `--reward_funcs '{"name": "self_judge", "votes": 4, "constitution": "1. Be correct. 2. Be brief."}'`.
    """

    name: ClassVar[str] = "self_judge"

    constitution: str = field(default=DEFAULT_CONSTITUTION, metadata={"help": "The principles the policy grades by."})
    rubric: str = field(default=DEFAULT_RUBRIC, metadata={"help": "Template: {constitution}, {prompt}, {completion} "
                                                                  "and dataset columns (then required)."})
    votes: int = field(default=4, metadata={"help": "Verdicts sampled per completion (k); the reward is their mean."})
    scale: float = field(default=10.0, metadata={"help": "Top of the rubric's scale; verdicts are divided by it."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the votes (> 0 with k > 1)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Length of each verdict."})
    batch_size: int = field(default=16, metadata={"help": "Rubric prompts per generate call (each with k votes)."})
    seed: int = field(default=0, metadata={"help": "Base seed of the votes; each call derives its own."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.votes < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise UserError("reward 'self_judge': votes, batch_size and max_new_tokens must be >= 1")
        if self.votes > 1 and self.temperature <= 0:
            raise UserError(f"reward 'self_judge': votes={self.votes} needs temperature > 0 (greedy gives one vote)")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.rubric) if f}
        except ValueError as exc:
            raise UserError(f"reward 'self_judge': rubric is not a valid format template ({exc})") from exc
        if "completion" not in fields:
            raise UserError("reward 'self_judge': the rubric must show the answer: put {completion} in it")
        self.required_columns = tuple(sorted(fields - {"prompt", "completion", "constitution"}))
        self.unparseable = 0
        self._calls = 0
        self._policy: tuple[Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_policy": None}

    def bind_policy(self, model: Any, tokenizer: Any) -> None:
        """Grade with `model` (the live module being trained, not a copy) and its `tokenizer`."""
        self._policy = (model, tokenizer)

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        if self._policy is None:
            raise RuntimeError("reward 'self_judge' has no policy: it grades with the model being trained, which "
                               "recipes/grpo.py binds; elsewhere call reward.bind_policy(model, tokenizer) first")
        import torch

        from posttrain.generation import encode_prompts, generate

        model, tokenizer = self._policy
        questions = [self.rubric.format(constitution=self.constitution, prompt=prompt_text(p), completion=t, **row)
                     for p, t, row in zip(prompts, texts, rows, strict=True)]
        self._calls += 1
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
                replies = generate(model, tokenizer, encode_prompts(tokenizer, questions), num_samples=self.votes,
                                   max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                   batch_size=self.batch_size, seed=self.seed * 1_000_003 + self._calls,
                                   desc="self_judge")
        finally:
            model.train(was_training)
        scores: list[Score | BaseException] = []
        for votes in replies:
            verdicts = [parse_verdict(v.text, self.scale) for v in votes]
            parsed = [v for v in verdicts if v is not None]
            self.unparseable += len(verdicts) - len(parsed)
            if parsed:
                scores.append(sum(parsed) / len(parsed))
            else:
                shown = votes[0].text if len(votes[0].text) <= 80 else votes[0].text[:77] + "..."
                scores.append(UnparseableVerdict(f"none of {len(votes)} votes held a score in [0, {self.scale:g}], "
                                                 f"e.g. {shown!r}"))
        return scores
