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
6. `to_fused` (transformers): checkpoints are saved in the released layout (per-expert keys, MTP copies) while the
   model holds fused experts; `from_pretrained` converts, `nn.Module.load_state_dict` (the Trainer's resume, with
   strict=False) does not and silently keeps the initial experts. The model's `load_state_dict` converts through
   transformers' private `core_model_loading.convert_and_load_state_dict_in_model` with the model's
   `get_model_conversion_mapping`, run on a meta-device twin.
7. `StopWhenTrained` (transformers `Trainer`): resumed from the checkpoint of its last step (`max_steps` not a
   multiple of the epoch), the Trainer skips the first `global_step` batches of the epoch and trains one step past
   `max_steps`; the callback stops such a run before its first step.
8. Adapter extras (PEFT): `set_peft_model_state_dict` loads every key of an adapter file with `strict=False`,
   including keys of the base model that are no adapter; `posttrain.model.lora.add_adapter_extras` writes the
   router biases there so `PeftModel.from_pretrained` (and a LoRA resume) restores them.
9. MLP LoRA targets (PEFT): for models transformers converts from the v4 layout (DeepSeek-V3 among them), PEFT
   rewrites the module targets `gate_proj`, `up_proj`, `down_proj` into `target_parameters` on the fused routed
   experts, dropping the dense and shared MLPs; `posttrain.model.lora.MLP_PARAMETERS` names their weights as
   parameters instead.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import convert_and_load_state_dict_in_model
from transformers.modeling_utils import LoadStateDictConfig
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Model
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

CHECKED_AGAINST = {"transformers": "5.24.0", "trl": "1.16.0", "torch": "2.13.0", "peft": "0.21.2"}

__all__ = [
    "CACHE_KWARG",
    "CHECKED_AGAINST",
    "AlreadyTrained",
    "DataCollatorForLanguageModeling",
    "StopWhenTrained",
    "allow_experts_implementation",
    "attention_implementation",
    "drop_redundant_packed_mask",
    "packed_rows_mask_is_redundant",
    "set_data_collator",
    "to_fused",
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


# The released checkpoints' per-MTP-layer copies of the shared embedding and head (the model uses the main ones).
_MTP_COPY_KEY = re.compile(r"(^|\.)model\.layers\.\d+\.(embed_tokens|shared_head\.head)\.weight$")


def to_fused(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` with released-layout keys converted to `model`'s own (fused experts), the MTP layers' copies of
    the embedding and head dropped (touchpoint 6). Keys the model has pass through; keys it does not know stay, so
    a strict load still names them.

    >>> saved = safetensors.torch.load_file("checkpoint-2/model.safetensors")  # doctest: +SKIP
    >>> model.load_state_dict(to_fused(model, saved), strict=True)            # doctest: +SKIP
    """
    own = model.state_dict()
    state_dict = {k: v for k, v in state_dict.items() if not _MTP_COPY_KEY.search(k)}
    if all(k in own for k in state_dict):
        return state_dict
    with torch.device("meta"):
        twin = type(model)(model.config)
    load_config = LoadStateDictConfig(weight_mapping=get_model_conversion_mapping(twin), device_map={"": "cpu"})
    info, _ = convert_and_load_state_dict_in_model(twin, dict(state_dict), load_config)
    converted = {k: v for k, v in twin.state_dict().items() if not v.is_meta}
    converted.update({k: state_dict[k] for k in info.unexpected_keys if k in state_dict})
    return converted



class AlreadyTrained(Exception):
    """A run resumed from the checkpoint of its last step: nothing is left to train (touchpoint 7)."""


class StopWhenTrained(TrainerCallback):
    """Raise `AlreadyTrained` at the start of a run resumed from its last step, before the Trainer trains a step past
    `max_steps` (touchpoint 7)."""

    def on_train_begin(self, args, state, control, **kwargs):
        if 0 < state.max_steps <= state.global_step:
            raise AlreadyTrained
