"""Where posttrain relies on library internals: every private API, patch or undocumented behaviour, in one place.

Checked against the versions in `CHECKED_AGAINST`; `tests/posttrain/test_touchpoints.py` has one test per
touchpoint that fails, naming it, when a library changes under it. Everything else in posttrain uses the
libraries' public API (trainer constructors, `Trainer.add_callback`, `Trainer.log`, torch module hooks).

1. `allow_experts_implementation` (transformers): `PreTrainedModel._can_set_experts_implementation` decides
   whether the experts backend (eager / batched_mm / grouped_mm) may be chosen by grepping the model class's module
   source for "@use_experts_implementation" and caching the answer in `_can_set_experts_implementation_cached_value`.
   Our subclass lives in another module but its experts are transformers' own, so we set the cached answer.
2. `CACHE_KWARG` (transformers): the name under which the backbone takes its KV cache. transformers 5.24 renamed
   `past_key_values` to `cache` (the old name warns and goes in 5.40); calls that hand the backbone a cache use
   this name, so they run without a FutureWarning on both sides of the rename.
3. `attention_implementation` (transformers): the attention kernel in use, read from the private
   `config._attn_implementation` (no public accessor).
4. `drop_redundant_packed_mask` (transformers + TRL): transformers builds a per-row block-diagonal mask from
   `position_ids` that restart (packed sequences) only when no 2D attention mask is given, so a backbone pre-hook
   drops the padding mask of packed rows. It is a hook on the backbone because TRL's trainers replace the model's
   `forward` with a fused LM head that calls the backbone directly.
5. `DataCollatorForLanguageModeling` and `set_data_collator` (TRL): TRL's SFT collator is importable only from
   `trl.trainer.sft_trainer`, and `SFTTrainer` refuses a custom collator when padding-free (which BFD packing
   turns on), so the row-packing collator replaces `trainer.data_collator` after construction. The trainer reads
   that attribute when it builds its data loaders; whether the trainer is padding-free is its `padding_free`
   attribute (`trainer_is_padding_free`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Model
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

CHECKED_AGAINST = {"transformers": "5.24.0", "trl": "1.16.0", "torch": "2.13.0"}

__all__ = [
    "CACHE_KWARG",
    "CHECKED_AGAINST",
    "DataCollatorForLanguageModeling",
    "allow_experts_implementation",
    "attention_implementation",
    "drop_redundant_packed_mask",
    "packed_rows_mask_is_redundant",
    "set_data_collator",
    "trainer_is_padding_free",
]


def allow_experts_implementation(cls: type) -> type:
    """Class decorator: let transformers choose the experts backend of a model subclass defined outside
    transformers (touchpoint 1)."""
    cls._can_set_experts_implementation_cached_value = True
    return cls


# Touchpoint 2: `inspect.signature` sees through transformers' `deprecate_kwarg` wrapper to the real parameters.
CACHE_KWARG = "cache" if "cache" in inspect.signature(DeepseekV3Model.forward).parameters else "past_key_values"


def attention_implementation(model: Any) -> str:
    """The attention kernel of `model` ("sdpa" when unset), touchpoint 3."""
    return getattr(model.config, "_attn_implementation", None) or "sdpa"


def packed_rows_mask_is_redundant(
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    cache: Any,
    use_cache: bool | None,
) -> bool:
    """True for a right-padding 2D mask over rows whose `position_ids` restart (packed sequences), without a cache.

    Dropping a right-padding mask loses nothing: causal attention keeps every real token off the padding after it
    (padding positions are not scored), and without it transformers keeps the packed sequences apart.

    >>> pos = torch.tensor([[0, 1, 0, 1, 0]])
    >>> packed_rows_mask_is_redundant(torch.tensor([[1, 1, 1, 1, 0]]), pos, None, False)
    True
    >>> packed_rows_mask_is_redundant(torch.tensor([[0, 1, 1, 1, 1]]), pos, None, False)  # left padding: keep
    False
    """
    if attention_mask is None or attention_mask.dim() != 2 or position_ids is None:
        return False
    if cache is not None or use_cache is not False:  # with a cache transformers ignores packing anyway
        return False
    mask = attention_mask.bool()
    right_padded = bool((mask.int().cummin(dim=-1).values.bool() == mask).all())
    pos = position_ids.expand_as(mask)
    restarts = bool(((pos[:, 1:] <= pos[:, :-1]) & mask[:, 1:]).any())
    return right_padded and restarts


def drop_redundant_packed_mask(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple | None:
    """Backbone forward pre-hook (`register_forward_pre_hook(..., with_kwargs=True)`), touchpoint 4: let
    transformers separate the sequences of packed rows."""
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if packed_rows_mask_is_redundant(kwargs.get("attention_mask"), kwargs.get("position_ids"), cache,
                                     kwargs.get("use_cache")):
        return args, {**kwargs, "attention_mask": None}
    return None


def trainer_is_padding_free(trainer: Any) -> bool:
    """Whether a built TRL `SFTTrainer` flattens each batch into one padding-free row (touchpoint 5)."""
    return bool(getattr(trainer, "padding_free", False))


def set_data_collator(trainer: Any, collator: Any) -> None:
    """Give a built trainer another collator (touchpoint 5): TRL's `SFTTrainer` refuses one at construction when
    padding-free."""
    trainer.data_collator = collator
