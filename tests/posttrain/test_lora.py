"""LoRA on MLA, dense/shared MLPs and fused routed experts; merged checkpoints equal the adapted model."""

from __future__ import annotations

import torch

from posttrain.model import apply_lora, load_model, merge_lora, save_model


def _adapted(routed_experts: bool):
    torch.manual_seed(0)
    model = apply_lora(load_model("tiny"), r=4, routed_experts=routed_experts)
    with torch.no_grad():  # B starts at zero; make the adapters do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model


def test_lora_backward_reaches_every_adapter_and_only_adapters():
    model = _adapted(routed_experts=True).train()
    ids = torch.randint(10, 1000, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("experts" in n for n in trainable) and any("kv_b_proj" in n for n in trainable)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())


def test_merge_equals_unmerged_and_saves_a_plain_checkpoint(tmp_path):
    model = _adapted(routed_experts=True).eval()
    ids = torch.randint(10, 1000, (2, 12))
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
    out = save_model(model, None, tmp_path / "merged")  # merges the adapters
    reloaded = load_model(out).eval()
    assert not any("lora" in k for k in reloaded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, unmerged, atol=1e-5, rtol=1e-5)


def test_merge_lora_returns_the_plain_model():
    model = _adapted(routed_experts=False).eval()
    ids = torch.randint(10, 1000, (1, 8))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        merged = merge_lora(model)
        torch.testing.assert_close(merged(input_ids=ids).logits, before, atol=1e-5, rtol=1e-5)
    assert type(merged).__name__ == "DeepseekV3MTPForCausalLM"
