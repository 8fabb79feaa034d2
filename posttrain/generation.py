"""Load a checkpoint and sample completions: batched HF `generate` (the default) or vLLM (optional).

Prompts go in as token ids so every backend sees exactly the same input; `encode_prompts` builds them, through
the tokenizer's chat template when it has one. All sampling for one call is seeded up front, so a rerun with the
same seed, batch size and device reproduces the completions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from posttrain.errors import MissingPackageError, UserError
from posttrain.model import load_model
from posttrain.model.speculative import SpeculativeStats

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class Completion:
    """One sampled response: its text (special tokens removed), its length in tokens (with the end token; None when
    a remote backend does not say), whether it stopped at `max_new_tokens` instead of an end token, and the error of
    a request that failed for good (then `text` is None; only remote teachers fail per sample)."""

    text: str | None
    num_tokens: int | None = None
    truncated: bool = False
    error: str | None = None


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else the CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
    return torch.device(device)


def load_checkpoint(path: str | Path, device: str = "auto") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an HF-format checkpoint and its tokenizer for inference (bf16 on GPU, fp32 on CPU).

    DeepSeek-V3 checkpoints go through `posttrain.model.load_model`, which also restores the MTP module (plain
    `AutoModelForCausalLM.from_pretrained` reports its keys as unexpected); outside training its forward, and so
    generation, is transformers' own bit for bit. Any other causal LM loads with `AutoModelForCausalLM`.
    """
    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if AutoConfig.from_pretrained(path).model_type == "deepseek_v3":
        model = load_model(path, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.to(dev).eval(), tokenizer


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], chat_template: bool | None = None
) -> list[list[int]]:
    """Token ids for each prompt: a string is the user turn; a list of messages is a whole conversation.

    With `chat_template` None (auto) the tokenizer's chat template is used when it has one, with
    `add_generation_prompt=True`; with False, string prompts are tokenized as they are.

    >>> from posttrain.tokenizer import build_tokenizer
    >>> tok = build_tokenizer()
    >>> [tok.decode(ids) for ids in encode_prompts(tok, ["2+2?"])]
    ['<|bos|><|user|>2+2?<|assistant|>']
    >>> [tok.decode(ids) for ids in encode_prompts(tok, ["2+2="], chat_template=False)]
    ['2+2=']
    """
    use_chat = bool(tokenizer.chat_template) if chat_template is None else chat_template
    if use_chat and not tokenizer.chat_template:
        raise UserError("chat_template=True but the tokenizer has no chat template")
    encoded = []
    for prompt in prompts:
        if use_chat:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
            encoded.append(list(ids))
        elif isinstance(prompt, str):
            encoded.append(tokenizer(prompt)["input_ids"])
        else:
            raise UserError("a prompt given as messages needs a chat template")
    return encoded


def _stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise UserError("neither the tokenizer nor the model's generation config names an end token")
    return ids


def check_sampling(num_samples: int, temperature: float) -> None:
    """Greedy decoding (temperature 0) gives one sample; several need sampling.

    >>> check_sampling(8, 0.0)
    Traceback (most recent call last):
    ...
    posttrain.errors.UserError: num_samples=8 needs a temperature > 0 (e.g. 0.6); greedy decoding gives one sample
    """
    if num_samples < 1:
        raise UserError(f"num_samples must be >= 1, got {num_samples}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0 and num_samples > 1:
        raise UserError(
            f"num_samples={num_samples} needs a temperature > 0 (e.g. 0.6); greedy decoding gives one sample"
        )


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    desc: str = "generate",
    speculative: bool = False,
    stats: SpeculativeStats | None = None,
) -> list[list[Completion]]:
    """Sample `num_samples` completions for each prompt (token ids), in left-padded batches of prompts.

    Greedy when `temperature` is 0 (then `num_samples` must be 1), otherwise sampled with `temperature` and
    nucleus `top_p` (no top-k cut). Prompts are batched longest first, so an out-of-memory shows at once.
    Returns one list of `num_samples` completions per prompt, in the order given.

    `speculative=True` decodes with the model's own MTP module as the drafter (self-speculative decoding through
    the model's `generate`, `posttrain.model.speculative`): greedy output is the same tokens, sampled output the
    same distribution, fewer main-model forwards; `stats` (a `SpeculativeStats`) then collects the draft acceptance.
    """
    check_sampling(num_samples, temperature)
    if speculative and not hasattr(model, "pop_speculative_stats"):
        raise UserError("speculative decoding drafts with posttrain's DeepSeek-V3 MTP module; "
                        f"{type(model).__name__} has none (load the checkpoint with load_checkpoint)")
    stop = _stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    sampled = temperature > 0
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampled,
        temperature=temperature if sampled else None,
        top_p=top_p if sampled else None,
        top_k=0 if sampled else None,
        num_return_sequences=num_samples,
        pad_token_id=pad,
        eos_token_id=stop,
    )
    torch.manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    results: list[list[Completion]] = [[] for _ in prompts]
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        batch = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: the prompt ends where generation starts
            input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i], dtype=torch.long)
            attention_mask[row, width - len(prompts[i]) :] = 1
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                generation_config=config,
                **({"speculative": True} if speculative else {}),
            )
        if speculative and stats is not None:
            stats.add(model.pop_speculative_stats())
        new_tokens = out[:, width:].tolist()  # (len(batch) * num_samples, T), samples of one prompt adjacent
        for row, i in enumerate(batch):
            results[i] = [
                _completion(tokenizer, new_tokens[row * num_samples + j], stop) for j in range(num_samples)
            ]
    return results


def _completion(tokenizer: PreTrainedTokenizerBase, tokens: list[int], stop: list[int]) -> Completion:
    end = next((pos for pos, t in enumerate(tokens) if t in stop), None)
    kept = tokens if end is None else tokens[:end]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    return Completion(text=text, num_tokens=len(tokens) if end is None else end + 1, truncated=end is None)


def load_vllm(model_path: str | Path, seed: int = 0, **llm_kwargs: Any) -> Any:
    """A `vllm.LLM` for `model_path` (`pip install 'posttrain[vllm]'`, a GPU); extra keyword arguments go to it."""
    try:
        from vllm import LLM
    except ImportError as err:
        raise MissingPackageError(
            "--backend vllm needs vLLM: pip install 'posttrain[vllm]' (or use --backend hf)"
        ) from err
    return LLM(model=str(model_path), seed=seed, **llm_kwargs)


def generate_vllm(
    llm: Any,
    prompts: Sequence[Sequence[int]],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[list[Completion]]:
    """`generate`'s contract served by a `vllm.LLM` from `load_vllm`."""
    from vllm import SamplingParams

    check_sampling(num_samples, temperature)
    params = SamplingParams(
        n=num_samples, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed
    )
    outputs = llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params)
    return [
        [Completion(o.text, len(o.token_ids), o.finish_reason == "length") for o in out.outputs] for out in outputs
    ]


def own_completions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]], *, max_new_tokens: int,
    temperature: float = 0.0, batch_size: int = 16, seed: int = 0, desc: str = "completions",
) -> list[list[dict]]:
    """Each prompt conversation followed by the model's own answer (`generate`, in eval mode; the model's mode is
    restored): greedy at temperature 0, else sampled."""
    was_training = model.training
    model.eval()
    out = generate(model, tokenizer, encode_prompts(tokenizer, prompts), max_new_tokens=max_new_tokens,
                   temperature=temperature, batch_size=batch_size, seed=seed, desc=desc)
    model.train(was_training)
    return [[*p, {"role": "assistant", "content": c[0].text}] for p, c in zip(prompts, out, strict=True)]
