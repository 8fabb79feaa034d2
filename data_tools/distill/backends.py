"""Teacher backends: `hf` (local checkpoint, batched `generate`), `openai` (any OpenAI-compatible chat-completions
endpoint), `vllm` (offline `vllm.LLM`, optional extra).

Every backend answers `generate(conversations, counts, seed)` with `counts[i]` `Completion`s for conversation i.
The `hf` and `vllm` backends are thin adapters over `posttrain.generation` (the project's one generation loop); the
`openai` backend sends one request per sample from a bounded thread pool through the `openai` client, which
retries 408/409/429/5xx, timeouts and refused connections with exponential backoff (0.5 s doubling to 8 s, or the
server's Retry-After), and records a request that still fails as a `Completion` with `error` set instead of
stopping the run.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import openai

from data_tools.distill.config import SamplingConfig, TeacherConfig
from posttrain.errors import UserError
from rewards.think_format import format_trace

if TYPE_CHECKING:  # at run time imported where used: posttrain.generation loads torch
    from posttrain.generation import Completion

Conversation = list[dict[str, str]]


class Backend(Protocol):
    """What `run_distill` needs from a teacher."""

    def generate(self, conversations: Sequence[Conversation], counts: Sequence[int], seed: int) -> list[list[Completion]]:
        """`counts[i]` samples of conversation i."""

    def close(self) -> None:
        """Free the model or connections."""


class HFBackend:
    """A local checkpoint sampled with `posttrain.generation.generate` in batches of prompts."""

    def __init__(self, teacher: TeacherConfig, sampling: SamplingConfig) -> None:
        from posttrain.generation import load_checkpoint

        self.teacher, self.sampling = teacher, sampling
        self.model, self.tokenizer = load_checkpoint(teacher.model, device=teacher.device)

    def generate(self, conversations: Sequence[Conversation], counts: Sequence[int], seed: int) -> list[list[Completion]]:
        from posttrain.generation import encode_prompts, generate

        ids = encode_prompts(self.tokenizer, conversations)
        out: list[list[Completion]] = [[] for _ in conversations]
        groups: dict[int, list[int]] = defaultdict(list)  # generate() takes one sample count per call
        for i, count in enumerate(counts):
            if count:
                groups[count].append(i)
        for count, members in sorted(groups.items()):
            completions = generate(
                self.model, self.tokenizer, [ids[i] for i in members], num_samples=count,
                max_new_tokens=self.sampling.max_new_tokens, temperature=self.sampling.temperature,
                top_p=self.sampling.top_p, batch_size=self.teacher.batch_size, seed=seed + count, desc="teacher",
                speculative=self.teacher.speculative,
            )
            for i, samples in zip(members, completions, strict=True):
                out[i] = samples
        return out


    def close(self) -> None:
        self.model = None


class VLLMBackend(HFBackend):
    """An offline `vllm.LLM` fed the same token ids as the hf backend (`pip install 'posttrain[vllm]'`)."""

    def __init__(self, teacher: TeacherConfig, sampling: SamplingConfig) -> None:
        from transformers import AutoTokenizer

        from posttrain.generation import load_vllm

        self.teacher, self.sampling = teacher, sampling
        self.tokenizer = AutoTokenizer.from_pretrained(teacher.model)
        self.model = load_vllm(teacher.model, seed=sampling.seed, **teacher.vllm_kwargs)

    def generate(self, conversations: Sequence[Conversation], counts: Sequence[int], seed: int) -> list[list[Completion]]:
        from posttrain.generation import encode_prompts, generate_vllm

        ids = encode_prompts(self.tokenizer, conversations)
        out: list[list[Completion]] = [[] for _ in conversations]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, count in enumerate(counts):
            if count:
                groups[count].append(i)
        for count, members in sorted(groups.items()):
            completions = generate_vllm(
                self.model, [ids[i] for i in members], num_samples=count, max_new_tokens=self.sampling.max_new_tokens,
                temperature=self.sampling.temperature, top_p=self.sampling.top_p, seed=seed + count,
            )
            for i, samples in zip(members, completions, strict=True):
                out[i] = samples
        return out



class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server (vLLM, SGLang, `transformers serve`, hosted APIs).

    One request per sample (`n=1`, so servers without `n` work), `max_concurrency` in flight. A reply's
    `reasoning_content` (DeepSeek API, vLLM/SGLang reasoning parsers) is put back as `<think>...</think>` before the
    answer, so every backend yields the same R1 text layout.
    """

    def __init__(self, teacher: TeacherConfig, sampling: SamplingConfig) -> None:
        self.teacher, self.sampling = teacher, sampling
        # Servers without keys (vLLM, `transformers serve`) ignore the placeholder the client requires.
        self.client = openai.OpenAI(base_url=teacher.base_url, api_key=os.environ.get(teacher.api_key_env) or "EMPTY",
                                    timeout=teacher.request_timeout, max_retries=teacher.max_retries)

    def generate(self, conversations: Sequence[Conversation], counts: Sequence[int], seed: int) -> list[list[Completion]]:
        jobs = [(i, j) for i, count in enumerate(counts) for j in range(count)]
        out: list[list[Completion | None]] = [[None] * count for count in counts]
        with ThreadPoolExecutor(max_workers=self.teacher.max_concurrency) as pool:
            results = pool.map(lambda job: self.request(conversations[job[0]], seed + 7919 * job[0] + job[1]), jobs)
            for (i, j), generation in zip(jobs, results, strict=True):
                out[i][j] = generation
        return out  # type: ignore[return-value]

    def request(self, messages: Conversation, seed: int) -> Completion:
        """One sample, with the client's retries; a request that still fails comes back with `error` set."""
        from posttrain.generation import Completion

        attempts = f"gave up after {self.teacher.max_retries + 1} attempts"
        try:
            reply = self.client.chat.completions.create(
                model=self.teacher.model, messages=messages, max_tokens=self.sampling.max_new_tokens,
                temperature=self.sampling.temperature, top_p=self.sampling.top_p, n=1, seed=seed,
            )
            return _parse_reply(reply.model_dump() if hasattr(reply, "model_dump") else reply)
        except openai.APIStatusError as exc:
            detail = exc.response.text[:300]
            if exc.status_code in (408, 409, 429) or exc.status_code >= 500:  # the ones the client retries
                return Completion(None, error=f"{attempts}: HTTP {exc.status_code}: {detail}")
            return Completion(None, error=f"HTTP {exc.status_code} from {self.teacher.base_url}: {detail}")
        except openai.APIConnectionError as exc:  # refused, reset, timed out
            return Completion(None, error=f"{attempts}: {type(exc).__name__}: {exc}")
        except _Fatal as exc:
            return Completion(None, error=str(exc))

    def close(self) -> None:
        self.client.close()


class _Fatal(Exception):
    pass


def _parse_reply(body: dict[str, Any]) -> Completion:
    """A `Completion` from a chat-completions reply.

    >>> _parse_reply({"choices": [{"message": {"content": "42", "reasoning_content": "6*7"},
    ...               "finish_reason": "stop"}], "usage": {"completion_tokens": 5}})
    Completion(text='<think>\\n6*7\\n</think>\\n42', num_tokens=5, truncated=False, error=None)
    """
    from posttrain.generation import Completion

    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise _Fatal(f"reply has no choices[0].message: {json.dumps(body)[:200]}") from None
    text = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        text = format_trace(reasoning.strip(), text.strip())
    tokens = (body.get("usage") or {}).get("completion_tokens")
    return Completion(text, tokens if isinstance(tokens, int) else None, choice.get("finish_reason") == "length")


def make_backend(teacher: TeacherConfig, sampling: SamplingConfig, section: str = "teacher") -> Backend:
    """The backend `teacher.backend` names, loaded (vllm raises ImportError with the install command if absent);
    `section` is the config key errors name (`policy` for preference data)."""
    if teacher.backend in ("hf", "vllm") and not Path(teacher.model).exists():
        raise UserError(f"{section}.model: checkpoint {teacher.model} does not exist (backend {teacher.backend} "
                        "loads a local checkpoint dir)")
    cls = {"hf": HFBackend, "openai": OpenAIBackend, "vllm": VLLMBackend}[teacher.backend]
    return cls(teacher, sampling)
