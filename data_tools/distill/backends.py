"""Teacher backends: `hf` (local checkpoint, batched `generate`), `openai` (any OpenAI-compatible chat-completions
endpoint), `vllm` (offline `vllm.LLM`, optional extra).

Every backend answers `generate(conversations, counts, seed)` with `counts[i]` `Completion`s for conversation i.
The `hf` and `vllm` backends are thin adapters over `posttrain.generation` (the project's one generation loop); the
`openai` backend sends one request per sample from a bounded thread pool, retries 429/5xx/timeouts/refused
connections with exponential backoff, and records a request that still fails as a `Completion` with `error`
set instead of stopping the run.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from data_tools.distill.config import SamplingConfig, TeacherConfig
from rewards.think_format import format_trace

if TYPE_CHECKING:  # at run time imported where used: posttrain.generation loads torch
    from posttrain.generation import Completion

Conversation = list[dict[str, str]]
RETRY_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)


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



class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server (vLLM, SGLang, `transformers serve`, hosted APIs).

    One request per sample (`n=1`, so servers without `n` work), `max_concurrency` in flight. A reply's
    `reasoning_content` (DeepSeek API, vLLM/SGLang reasoning parsers) is put back as `<think>...</think>` before the
    answer, so every backend yields the same R1 text layout.
    """

    def __init__(self, teacher: TeacherConfig, sampling: SamplingConfig) -> None:
        self.teacher, self.sampling = teacher, sampling
        self.url = teacher.base_url.rstrip("/") + "/chat/completions"
        key = os.environ.get(teacher.api_key_env)
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def generate(self, conversations: Sequence[Conversation], counts: Sequence[int], seed: int) -> list[list[Completion]]:
        jobs = [(i, j) for i, count in enumerate(counts) for j in range(count)]
        out: list[list[Completion | None]] = [[None] * count for count in counts]
        with ThreadPoolExecutor(max_workers=self.teacher.max_concurrency) as pool:
            results = pool.map(lambda job: self.request(conversations[job[0]], seed + 7919 * job[0] + job[1]), jobs)
            for (i, j), generation in zip(jobs, results, strict=True):
                out[i][j] = generation
        return out  # type: ignore[return-value]

    def request(self, messages: Conversation, seed: int) -> Completion:
        """One sample, with retries; a request that still fails comes back with `error` set."""
        from posttrain.generation import Completion

        payload = {
            "model": self.teacher.model, "messages": messages, "max_tokens": self.sampling.max_new_tokens,
            "temperature": self.sampling.temperature, "top_p": self.sampling.top_p, "n": 1, "seed": seed,
        }
        data = json.dumps(payload).encode()
        error = "no attempt"
        for attempt in range(self.teacher.max_retries + 1):
            try:
                return _parse_reply(self._post(data))
            except _Retryable as exc:
                error = str(exc)
                if attempt < self.teacher.max_retries:
                    delay = self.teacher.backoff * 2**attempt * (1 + 0.25 * random.random())
                    time.sleep(max(delay, exc.retry_after or 0.0))
            except _Fatal as exc:
                return Completion(None, error=str(exc))
        return Completion(None, error=f"gave up after {self.teacher.max_retries + 1} attempts: {error}")

    def _post(self, data: bytes) -> dict[str, Any]:
        request = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.teacher.request_timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            if exc.code in RETRY_STATUS:
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                raise _Retryable(f"HTTP {exc.code}: {detail}", _seconds(retry_after)) from None
            raise _Fatal(f"HTTP {exc.code} from {self.url}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            raise _Retryable(f"reply is not JSON: {body[:200]!r}") from None


    def close(self) -> None:
        pass


class _Fatal(Exception):
    pass


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


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


def make_backend(teacher: TeacherConfig, sampling: SamplingConfig) -> Backend:
    """The backend `teacher.backend` names, loaded (vllm raises ImportError with the install command if absent)."""
    if teacher.backend in ("hf", "vllm") and not Path(teacher.model).exists():
        raise ValueError(f"teacher.model: checkpoint {teacher.model} does not exist (backend {teacher.backend} loads "
                         "a local checkpoint dir)")
    cls = {"hf": HFBackend, "openai": OpenAIBackend, "vllm": VLLMBackend}[teacher.backend]
    return cls(teacher, sampling)
