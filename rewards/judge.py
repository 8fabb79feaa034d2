"""The `judge` reward: a generative model grades each completion against a rubric.

The judge is a local Hugging Face causal-LM checkpoint, or any OpenAI-compatible chat-completions endpoint
(`transformers serve`, vLLM, a hosted API), called through the `openai` client (its retries and timeouts).
"""

from __future__ import annotations

import os
import re
import string
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from posttrain.errors import UserError
from rewards.base import Reward, RowScores, Score
from rewards.model_inputs import default_device, prompt_text

DEFAULT_RUBRIC = """You are grading an answer to a question.

Question:
{prompt}

Answer:
{completion}

Judge correctness, reasoning and clarity. Reply with one line "Score: N", where N is an integer from 0 to 10."""

# Most to least explicit: "Score: 7", "Rating: 7/10", "[[7]]", then a bare "7/10".
_VERDICTS = (
    re.compile(r"(?i)\b(?:score|rating|grade)\s*[:=]?\s*\**\s*(?P<n>-?\d+(?:\.\d+)?)"),
    re.compile(r"\[\[\s*(?P<n>-?\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"(?P<n>-?\d+(?:\.\d+)?)\s*/\s*10\b"),
)


class UnparseableVerdict(ValueError):
    """The judge answered, but without a score in range."""


def parse_verdict(reply: str, scale: float) -> float | None:
    """The last score in a judge's reply, divided by `scale`; None when there is none in [0, scale].

    >>> parse_verdict("Clear and correct.\\nScore: 8", 10), parse_verdict("**Rating:** 7/10", 10)
    (0.8, 0.7)
    >>> parse_verdict("I cannot decide.", 10) is None, parse_verdict("Score: 42", 10) is None
    (True, True)
    """
    for pattern in _VERDICTS:
        found = list(pattern.finditer(reply))
        if found:
            value = float(found[-1].group("n"))
            return value / scale if 0 <= value <= scale else None
    return None


@dataclass
class JudgeReward(Reward):
    """A judge's rubric score for each completion, scaled to [0, 1]; an unparseable reply scores None and is
    counted in `unparseable` (and in `stats.failures`).

    `rubric` is a `str.format` template: `{prompt}`, `{completion}`, and any dataset column (e.g.
    `{solution}`), which then becomes a required column. Set `model` (a local causal-LM checkpoint) or
    `endpoint` (an OpenAI-compatible base URL such as `http://127.0.0.1:8000/v1`, with `api_model` naming the
    served model; the key, if any, is read from the environment variable `api_key_env`).

    Example (needs a judge): `get_reward({"name": "judge", "endpoint": "http://127.0.0.1:8000/v1",
    "api_model": "judge"})`.
    """

    name: ClassVar[str] = "judge"

    model: str = field(default="", metadata={"help": "Local causal-LM checkpoint used as the judge."})
    endpoint: str = field(default="", metadata={"help": "OpenAI-compatible base URL (…/v1) of a chat judge."})
    api_model: str = field(default="", metadata={"help": "The `model` field sent to the endpoint."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the key."})
    rubric: str = field(default=DEFAULT_RUBRIC, metadata={"help": "Prompt template; see the class docstring."})
    scale: float = field(default=10.0, metadata={"help": "Top of the rubric's scale; scores are divided by it."})
    max_new_tokens: int = field(default=256, metadata={"help": "Length of the judge's reply."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of the judge."})
    request_timeout: float = field(default=60.0, metadata={"help": "Seconds per endpoint request."})
    max_retries: int = field(
        default=2, metadata={"help": "Endpoint retries after 408/409/429/5xx, timeouts and refused connections."}
    )
    concurrency: int = field(default=8, metadata={"help": "Endpoint requests in flight at once."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call of a local judge."})
    device: str = field(default="", metadata={"help": "Torch device of a local judge; empty means the trainer's."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.model) == bool(self.endpoint):
            raise UserError("reward 'judge' needs exactly one of option 'model' (a local checkpoint) or "
                            "'endpoint' (an OpenAI-compatible URL such as http://127.0.0.1:8000/v1)")
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise UserError(f"reward 'judge': endpoint must be an http(s) URL, got {self.endpoint!r}")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.rubric) if f}
        except ValueError as exc:
            raise UserError(f"reward 'judge': rubric is not a valid format template ({exc})") from exc
        # Every placeholder but the two we fill ourselves is a dataset column.
        self.required_columns = tuple(sorted(fields - {"prompt", "completion"}))
        self.optional_columns = ()
        self.unparseable = 0
        self._count_lock = threading.Lock()
        self._local: tuple[Any, Any] | None = None
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_local", "_client", "_count_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _local=None, _client=None, _count_lock=threading.Lock())

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        questions = [self.rubric.format(prompt=prompt_text(p), completion=t, **row)
                     for p, t, row in zip(prompts, texts, rows, strict=True)]
        replies = self._ask_endpoint(questions) if self.endpoint else self._ask_local(questions)
        scores: list[Score | BaseException] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                scores.append(reply)
                continue
            score = parse_verdict(reply, self.scale)
            if score is None:
                with self._count_lock:
                    self.unparseable += 1
                shown = reply if len(reply) <= 120 else reply[:117] + "..."
                scores.append(UnparseableVerdict(f"no score in [0, {self.scale:g}] in the judge's reply {shown!r}"))
            else:
                scores.append(score)
        return scores

    def _ask_endpoint(self, questions: list[str]) -> list[str | BaseException]:
        with ThreadPoolExecutor(max(1, min(self.concurrency, len(questions)))) as pool:
            return list(pool.map(self._request, questions))

    def _request(self, question: str) -> str | BaseException:
        try:
            reply = self._endpoint_client().chat.completions.create(
                model=self.api_model, messages=[{"role": "user", "content": question}],
                max_tokens=self.max_new_tokens, temperature=self.temperature,
            )
            return reply.choices[0].message.content or ""
        except Exception as exc:  # noqa: BLE001 - one failed request fails one row
            return exc

    def _endpoint_client(self) -> Any:
        if self._client is None:
            import openai

            # Servers without keys (vLLM, `transformers serve`) ignore the placeholder the client requires.
            self._client = openai.OpenAI(base_url=self.endpoint, api_key=os.environ.get(self.api_key_env) or "EMPTY",
                                         timeout=self.request_timeout, max_retries=self.max_retries)
        return self._client

    def _ask_local(self, questions: list[str]) -> list[str | BaseException]:
        import torch

        from posttrain.generation import encode_prompts, generate, load_checkpoint

        if self._local is None:
            self._local = load_checkpoint(self.model, device=self.device or default_device())
        model, tokenizer = self._local
        # `generate` seeds torch; the trainer's own random state (rollout sampling, dropout) must not see it
        cuda = [model.device.index or 0] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            completions = generate(model, tokenizer, encode_prompts(tokenizer, questions),
                                   max_new_tokens=self.max_new_tokens, temperature=max(self.temperature, 0.0),
                                   batch_size=self.batch_size, desc="judge")
        return [samples[0].text for samples in completions]
