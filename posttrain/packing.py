"""Packed SFT batches as rows, for attention kernels without variable-length support (sdpa and eager: CPU, and
GPUs without flash-attn).

TRL's padding-free packing concatenates a whole batch into one (1, B*T) row and relies on a varlen kernel (flash
attention) to keep the sequences apart. Any other kernel gets a dense (B*T)^2 block-diagonal mask: B times the
attention work of the same tokens laid out as B rows of T (1.9x slower SFT steps for the tiny preset on CPU).
`use_row_packing` keeps TRL's packed rows as rows, with `position_ids` restarting at each packed sequence; a
backbone pre-hook (`posttrain.touchpoints.drop_redundant_packed_mask`) then drops the padding mask so that
transformers builds the per-row block-diagonal mask from `position_ids` and no sequence attends to another.
"""

from __future__ import annotations

from typing import Any

from posttrain.touchpoints import (
    DataCollatorForLanguageModeling,
    attention_implementation,
    set_data_collator,
    trainer_is_padding_free,
)


def needs_row_packing(model: Any) -> bool:
    """True when the model's attention would run a padding-free batch as one long dense-masked row (anything but
    flash-attention kernels, which take the sequence boundaries, and flex attention, whose block mask is sparse)."""
    impl = attention_implementation(model)
    return impl != "flex_attention" and "flash" not in impl


class RowPackedCollator(DataCollatorForLanguageModeling):
    """TRL's collator keeping packed rows as (B, T) rows with restarting `position_ids` and a padding mask.

    >>> c = RowPackedCollator(pad_token_id=0)
    >>> b = c([{"input_ids": [5, 6, 7], "seq_lengths": [2, 1]}, {"input_ids": [8], "seq_lengths": [1]}])
    >>> b["position_ids"].tolist(), b["labels"].tolist()
    ([[0, 1, 0], [0, 0, 0]], [[-100, 6, -100], [-100, -100, -100]])
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        super().__init__(pad_token_id=pad_token_id, return_position_ids=True, pad_to_multiple_of=pad_to_multiple_of)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        batch["labels"][batch["position_ids"] == 0] = -100  # no sequence learns the first token of the next
        return batch


def use_row_packing(trainer: Any) -> bool:
    """Give a padding-free `SFTTrainer` a (B, T) row collator where its attention kernel needs one; True if so.

    Call it between `SFTTrainer(...)` and `trainer.train()`, as `posttrain.training.train` does for every recipe.
    """
    collator = trainer.data_collator
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not trainer_is_padding_free(trainer) or not needs_row_packing(model):
        return False
    set_data_collator(trainer, RowPackedCollator(collator.pad_token_id, collator.pad_to_multiple_of))
    return True
