"""Turning a (prompt, completion) pair into the text a reward model or judge reads."""

from __future__ import annotations

from typing import Any

from rewards.base import completion_text


def as_messages(prompt: Any, completion: str) -> list[dict[str, str]]:
    """The conversation so far plus the completion as the assistant's turn.

    >>> as_messages("What is 6*7?", "42")
    [{'role': 'user', 'content': 'What is 6*7?'}, {'role': 'assistant', 'content': '42'}]
    """
    history = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt or "")}]
    return history + [{"role": "assistant", "content": completion}]


def prompt_text(prompt: Any) -> str:
    """A prompt as plain text: a string as is, a conversation as its messages' contents joined by newlines.

    >>> prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    'Be brief.\\nHi'
    """
    if isinstance(prompt, list):
        return "\n".join(completion_text([dict(m, role="assistant")]) for m in prompt)
    return str(prompt or "")


def render(tokenizer: Any, prompt: Any, completion: str) -> str:
    """The pair through the tokenizer's chat template when it has one, else prompt and completion concatenated."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(as_messages(prompt, completion), tokenize=False)
    return f"{prompt_text(prompt)}\n{completion}"


def default_device() -> str:
    """The trainer's device: accelerate's current device when a state exists, else CUDA when present, else CPU."""
    import torch

    try:
        from accelerate import PartialState

        return str(PartialState().device)
    except Exception:  # noqa: BLE001 - no accelerate state: pick the device ourselves
        return "cuda" if torch.cuda.is_available() else "cpu"
