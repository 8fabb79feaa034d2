"""The embedded offline tokenizer: deterministic, lossless, chat template with assistant masks, atomic think tags."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from posttrain.tokenizer import VOCAB_SIZE, build_tokenizer

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 345 + 789?"},
    {"role": "assistant", "content": "<think>5+9=14, carry 1</think> The answer is \\boxed{1134}."},
]


def test_build_is_deterministic_and_fits_the_preset_vocab():
    a, b = build_tokenizer(), build_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert len(a) <= VOCAB_SIZE


def test_any_text_round_trips_and_digits_are_single_tokens():
    tok = build_tokenizer()
    text = "Ünïcode 🙂 def f(x):\n    return x * 12345"
    assert tok.decode(tok.encode(text)) == text
    assert [tok.decode([i]) for i in tok.encode("12345")] == list("12345")


def test_think_tags_are_atomic_and_survive_skip_special_tokens():
    tok = build_tokenizer()
    ids = tok.encode("<think>x</think>")
    assert ids[0] == tok.convert_tokens_to_ids("<think>") and ids[-1] == tok.convert_tokens_to_ids("</think>")
    assert tok.decode(ids, skip_special_tokens=True) == "<think>x</think>"


def test_chat_template_masks_only_the_assistant_turn():
    tok = build_tokenizer()
    out = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assistant = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert assistant == CHAT[-1]["content"] + tok.eos_token
    prompt = tok.apply_chat_template(CHAT[:2], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|bos|><|system|>Be brief.<|user|>What is 345 + 789?<|assistant|>"


def test_saved_tokenizer_reloads_identically(tmp_path: Path):
    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.apply_chat_template(CHAT, tokenize=False) == tok.apply_chat_template(CHAT, tokenize=False)
    assert again.encode("12 + 34 <think>") == tok.encode("12 + 34 <think>")
