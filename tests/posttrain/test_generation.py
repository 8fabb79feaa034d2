"""Batched generation: left padding changes nothing, sampling is seeded, greedy gives exactly one sample."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain.generation import encode_prompts, generate, load_checkpoint, load_vllm

PROMPTS = ["What is 12 + 7?", "Reverse the string 'hello world' and then count its letters, please.", "Hi"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_checkpoint: Path):
    return load_checkpoint(tiny_checkpoint, device="cpu")


def test_batched_greedy_matches_one_prompt_at_a_time(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    ids = encode_prompts(tokenizer, PROMPTS)
    assert len({len(i) for i in ids}) == 3  # different lengths, so the batch is left-padded
    batched = generate(model, tokenizer, ids, max_new_tokens=12, batch_size=3)
    alone = generate(model, tokenizer, ids, max_new_tokens=12, batch_size=1)
    assert batched == alone
    assert all(len(samples) == 1 and 1 <= samples[0].num_tokens <= 12 for samples in batched)


def test_sampling_is_reproducible_for_a_seed_and_varies_with_it(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    ids = encode_prompts(tokenizer, PROMPTS[:2])
    kwargs = dict(num_samples=3, temperature=1.0, max_new_tokens=8)
    first = generate(model, tokenizer, ids, seed=1, **kwargs)
    assert first == generate(model, tokenizer, ids, seed=1, **kwargs)
    assert first != generate(model, tokenizer, ids, seed=2, **kwargs)
    assert [len(samples) for samples in first] == [3, 3]


def test_several_samples_need_a_temperature(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="num_samples=4 needs a temperature > 0"):
        generate(model, tokenizer, encode_prompts(tokenizer, PROMPTS), num_samples=4, temperature=0.0)


def test_chat_template_wraps_string_prompts_and_can_be_turned_off(model_and_tokenizer) -> None:
    _, tokenizer = model_and_tokenizer
    chat, raw = encode_prompts(tokenizer, ["2+2?"]), encode_prompts(tokenizer, ["2+2?"], chat_template=False)
    assert tokenizer.decode(chat[0]) == "<|bos|><|user|>2+2?<|assistant|>"
    assert tokenizer.decode(raw[0]) == "2+2?"


def test_project_loader_generates_exactly_what_plain_from_pretrained_does(
    model_and_tokenizer, tiny_checkpoint: Path
) -> None:
    model, tokenizer = model_and_tokenizer
    plain = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()
    ids = encode_prompts(tokenizer, PROMPTS)
    assert generate(model, tokenizer, ids, max_new_tokens=8) == generate(plain, tokenizer, ids, max_new_tokens=8)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_says_how_to_install_it() -> None:
    with pytest.raises(ImportError, match=r"pip install 'posttrain\[vllm\]'"):
        load_vllm("any/checkpoint")
