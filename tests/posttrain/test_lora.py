"""LoRA on MLA, dense/shared MLPs and fused routed experts; merged checkpoints equal the adapted model."""

from __future__ import annotations

import torch

from posttrain.model import load_model, merge_lora, save_model
from posttrain.training import ModelArguments, apply_lora


def _adapted(routed_experts: bool):
    torch.manual_seed(0)
    model = apply_lora(load_model("tiny"), ModelArguments(use_peft=True, lora_r=4, lora_routed_experts=routed_experts))
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


def test_lora_targets_mla_dense_and_shared_mlps_and_routed_experts_only_when_asked():
    def adapted_weights(routed_experts: bool) -> set[str]:
        model = _adapted(routed_experts)
        names = {n.replace("base_model.model.", "") for n, p in model.named_parameters() if p.requires_grad}
        return {n.split(".lora_")[0].replace(".base_layer", "") for n in names}

    without = adapted_weights(routed_experts=False)
    assert "model.layers.0.mlp.gate_proj" in without  # the dense MLP (first_k_dense_replace)
    assert "model.layers.1.mlp.shared_experts.down_proj" in without
    assert "model.layers.1.self_attn.kv_b_proj" in without
    assert not any(".mlp.experts" in n for n in without)
    with_experts = adapted_weights(routed_experts=True)
    assert with_experts > without and any(".mlp.experts" in n for n in with_experts)


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
