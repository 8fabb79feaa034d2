"""Row packing: the same packed examples as (B, T) rows train exactly as TRL's padding-free (1, B*T) batch."""

from __future__ import annotations

import torch

from posttrain.model import load_model
from posttrain.packing import RowPackedCollator, needs_row_packing
from posttrain.touchpoints import DataCollatorForLanguageModeling, packed_rows_mask_is_redundant


def _examples() -> list[dict]:
    g = torch.Generator().manual_seed(5)
    lengths = [[7, 5, 4], [9, 6], [3]]  # rows as TRL's BFD packing leaves them; the last one short (padding)
    return [{"input_ids": torch.randint(10, 1000, (sum(row),), generator=g).tolist(), "seq_lengths": row}
            for row in lengths]


def test_row_packed_batch_gives_the_losses_of_the_padding_free_batch():
    torch.manual_seed(0)
    model = load_model("tiny", mtp_loss_weight=1.0).train()
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(_examples())
    rows = RowPackedCollator(pad_token_id=0)(_examples())
    assert rows["input_ids"].shape == (3, 16) and "attention_mask" in rows
    assert packed_rows_mask_is_redundant(rows["attention_mask"], rows["position_ids"], None, False)
    # use_cache=False as TRL's compute_loss sets it
    p = model(**flat, use_cache=False)
    q = model(**rows, use_cache=False)
    torch.testing.assert_close(q.loss, p.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.mtp_loss, p.mtp_loss, rtol=1e-5, atol=1e-5)


def test_packed_rows_do_not_attend_across_sequences():
    torch.manual_seed(0)
    model = load_model("tiny").eval()
    rows = RowPackedCollator(pad_token_id=0)(_examples())
    with torch.no_grad():
        packed = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"],
                       position_ids=rows["position_ids"], use_cache=False).logits
        alone = model(input_ids=rows["input_ids"][:1, 7:12]).logits  # the second sequence of the first row
    torch.testing.assert_close(packed[:1, 7:12], alone, rtol=1e-4, atol=1e-4)


def test_left_padding_and_cached_generation_keep_their_mask():
    pos = torch.tensor([[0, 0, 1, 0, 1]])
    assert not packed_rows_mask_is_redundant(torch.tensor([[0, 1, 1, 1, 1]]), pos, None, False)
    assert not packed_rows_mask_is_redundant(torch.tensor([[1, 1, 1, 1, 0]]), pos, None, None)
    assert not packed_rows_mask_is_redundant(torch.tensor([[1, 1, 1, 1, 0]]), torch.arange(5)[None], None, False)


def test_row_packing_only_without_a_varlen_kernel():
    model = load_model("tiny")
    assert needs_row_packing(model)  # sdpa
    model.config._attn_implementation = "flash_attention_2"
    assert not needs_row_packing(model)
