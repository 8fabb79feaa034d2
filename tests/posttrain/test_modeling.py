"""Our DeepseekV3MTPForCausalLM against transformers' DeepseekV3ForCausalLM, and its MTP training path."""

from __future__ import annotations

import pytest
import torch
from transformers import DeepseekV3ForCausalLM

from posttrain.model import load_model
from posttrain.model.mtp import mtp_targets, segment_ids


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(10, 1000, (2, 24), generator=torch.Generator().manual_seed(1))


def _plain_copy(model) -> DeepseekV3ForCausalLM:
    plain = DeepseekV3ForCausalLM(model.config)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith(f"model.layers.{model.config.num_hidden_layers}.") for k in unexpected)
    return plain


def test_logits_identical_to_transformers_when_mtp_off(ids):
    torch.manual_seed(0)
    ours = load_model("tiny", mtp_loss_weight=0.0)
    plain = _plain_copy(ours)
    for train in (False, True):
        ours.train(train), plain.train(train)
        a, b = ours(input_ids=ids, labels=ids), plain(input_ids=ids, labels=ids)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
        assert a.mtp_loss is None


def test_logits_identical_outside_training_with_mtp_on(ids):
    torch.manual_seed(0)
    ours = load_model("tiny", mtp_loss_weight=0.3).eval()
    assert torch.equal(ours(input_ids=ids).logits, _plain_copy(ours).eval()(input_ids=ids).logits)


def test_training_loss_adds_weighted_mtp_loss(ids):
    torch.manual_seed(0)
    model = load_model("tiny", mtp_loss_weight=0.3).train()
    out = model(input_ids=ids, labels=ids)
    ce = _plain_copy(model).train()(input_ids=ids, labels=ids).loss
    assert torch.isfinite(out.mtp_loss)
    torch.testing.assert_close(out.loss, ce + 0.3 * out.mtp_loss)


def test_mtp_loss_falls_on_repeated_batch_and_reaches_mtp_weights(ids):
    torch.manual_seed(0)
    model = load_model("tiny", mtp_loss_weight=1.0).train()
    mtp = model.model.layers[model.config.num_hidden_layers]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(5):
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        if step == 0:
            for name in ("eh_proj.weight", "enorm.weight", "hnorm.weight", "shared_head.norm.weight",
                         "self_attn.kv_b_proj.weight", "mlp.experts.gate_up_proj"):
                assert mtp.get_parameter(name).grad.abs().sum() > 0, name
        opt.step(), opt.zero_grad()
        losses.append(out.mtp_loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_mtp_targets_stay_inside_packed_sequences_and_skip_ignored_labels():
    position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1]])
    labels = torch.tensor([[-100, -100, 12, 13, -100, 15, 16, -100, 18]])
    seg = segment_ids(labels.shape, position_ids, labels.device)
    assert mtp_targets(labels, seg, None, 1).tolist() == [[12, 13, -100, -100, 16, -100, -100, -100, -100]]
    assert mtp_targets(labels, seg, None, 2).tolist() == [[13, -100, -100, -100, -100, -100, -100, -100, -100]]


def test_packed_batch_gives_the_losses_of_the_padded_batch():
    """Padding-free packing (position_ids reset, no attention_mask) == the same sequences right-padded."""
    torch.manual_seed(0)
    model = load_model("tiny", mtp_loss_weight=1.0).train()
    g = torch.Generator().manual_seed(3)
    a, b = torch.randint(10, 1000, (9,), generator=g), torch.randint(10, 1000, (6,), generator=g)
    packed = torch.cat([a, b])[None]
    position_ids = torch.cat([torch.arange(9), torch.arange(6)])[None]
    packed_labels = packed.clone()
    packed_labels[0, 9] = -100  # TRL's padding-free collator masks each sequence start
    padded = torch.stack([a, torch.cat([b, torch.zeros(3, dtype=torch.long)])])
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    padded_labels = padded.masked_fill(mask == 0, -100)
    # use_cache=False as TRL sets it: transformers builds the block-diagonal mask only without a cache
    p = model(input_ids=packed, position_ids=position_ids, labels=packed_labels, use_cache=False)
    q = model(input_ids=padded, attention_mask=mask, labels=padded_labels, use_cache=False)
    torch.testing.assert_close(p.loss, q.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.mtp_loss, q.mtp_loss, rtol=1e-5, atol=1e-5)


def test_no_extras_under_no_grad_in_training_mode(ids):
    model = load_model("tiny", mtp_loss_weight=0.3, seq_balance_alpha=0.01).train()
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    assert out.mtp_loss is None and out.aux_loss is None and model.pop_loss_sums() == {}


def test_generate_with_cache_matches_no_cache(tiny_checkpoint):
    model = load_model(tiny_checkpoint).eval()
    prompt = torch.tensor([[0, 5, 17, 99, 4]])
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=2)
    with_cache = model.generate(prompt, use_cache=True, **kw)
    assert with_cache.shape == (1, 13)
    assert torch.equal(with_cache, model.generate(prompt, use_cache=False, **kw))


def test_mtp_is_frozen_when_its_loss_weight_is_zero():
    model = load_model("tiny", mtp_loss_weight=0.0)
    mtp = model.model.layers[model.config.num_hidden_layers :]
    assert not any(p.requires_grad for p in mtp.parameters())
    assert all(p.requires_grad for p in model.model.layers[: model.config.num_hidden_layers].parameters())


def test_loss_scale_scales_the_extra_losses_gradient_like_the_main_loss(ids):
    """What an fp16 GradScaler needs: backward of S * loss with `loss_scale` S gives S times the unscaled grads."""
    torch.manual_seed(0)
    model = load_model("tiny", mtp_loss_weight=0.3, seq_balance_alpha=1e-2).train()
    mtp_weight = model.model.layers[model.config.num_hidden_layers].eh_proj.weight

    def grads(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        model.loss_scale = scale
        out = model(input_ids=ids, labels=ids)
        (scale * torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())).backward()
        return mtp_weight.grad.clone(), model.model.layers[1].mlp.gate.weight.grad.clone()

    plain, scaled = grads(1.0), grads(1024.0)
    for a, b in zip(plain, scaled, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(b / 1024.0, a)
