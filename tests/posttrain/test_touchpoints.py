"""One test per library touchpoint (`posttrain.touchpoints`): each fails, naming the touchpoint, when a library
changes the behaviour we rely on."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from datasets import Dataset
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3ForCausalLM, DeepseekV3Model

from posttrain.model import load_model
from posttrain.model.modeling import DeepseekV3MTPForCausalLM
from posttrain.packing import RowPackedCollator, use_row_packing
from posttrain.tokenizer import build_tokenizer
from posttrain.touchpoints import (
    CACHE_KWARG,
    AlreadyTrained,
    StopWhenTrained,
    DataCollatorForLanguageModeling,
    allow_experts_implementation,
    attention_implementation,
    drop_redundant_packed_mask,
    to_fused,
    trainer_is_padding_free,
)


def test_touchpoint_1_experts_backend_choice_reads_the_cached_flag():
    probe = type("Probe", (DeepseekV3ForCausalLM,),
                 {"__module__": "a_module_not_loaded", "_can_set_experts_implementation_cached_value": None})
    assert probe._can_set_experts_implementation() is False, (
        "touchpoint 1: transformers no longer decides the experts backend from the module source; "
        "allow_experts_implementation may be unneeded")
    assert allow_experts_implementation(probe)._can_set_experts_implementation() is True, (
        "touchpoint 1: transformers no longer reads _can_set_experts_implementation_cached_value")
    model = load_model("tiny")
    model.set_experts_implementation("batched_mm")
    assert model.config._experts_implementation == "batched_mm"
    assert DeepseekV3MTPForCausalLM._can_set_experts_implementation() is True


def test_touchpoint_2_the_cache_keyword_is_the_backbones_and_does_not_warn():
    assert CACHE_KWARG in inspect.signature(DeepseekV3Model.forward).parameters, "touchpoint 2: cache keyword moved"
    model = load_model("tiny").eval()
    ids = torch.tensor([[5, 6, 7]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True)
            cache = out[CACHE_KWARG]
            step = model.model(input_ids=torch.tensor([[8]]), use_cache=True, **{CACHE_KWARG: cache})
            full = model.model(input_ids=torch.tensor([[5, 6, 7, 8]])).last_hidden_state
            greedy = model.generate(ids, max_new_tokens=3, do_sample=False)
    torch.testing.assert_close(step.last_hidden_state[:, -1], full[:, -1], rtol=1e-4, atol=1e-4)
    assert greedy.shape == (1, 6)


def test_touchpoint_3_attention_implementation_is_read_from_the_config():
    model = load_model("tiny")
    assert attention_implementation(model) == model.config._attn_implementation == "sdpa", "touchpoint 3"


def test_touchpoint_4_without_a_mask_transformers_keeps_packed_sequences_apart():
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(load_model("tiny").config).eval()  # transformers' own class, no hook
    ids = torch.randint(10, 1000, (1, 9), generator=torch.Generator().manual_seed(1))
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4]])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        alone = model(input_ids=ids[:, 4:], use_cache=False).logits
        masked = model(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids), use_cache=False).logits
    torch.testing.assert_close(packed[:, 4:], alone, rtol=1e-4, atol=1e-4,
                               msg="touchpoint 4: transformers no longer builds packed masks from position_ids")
    assert not torch.allclose(masked[:, 4:], alone, atol=1e-4), (
        "touchpoint 4: transformers now separates packed rows despite a 2D mask; the pre-hook may be unneeded")
    kwargs = {"attention_mask": torch.ones_like(ids), "position_ids": pos, "use_cache": False}
    assert drop_redundant_packed_mask(None, (), kwargs)[1]["attention_mask"] is None


def test_touchpoint_5_trl_refuses_a_padding_free_collator_and_reads_the_replaced_one(tmp_path):
    from trl import SFTConfig, SFTTrainer

    model = load_model("tiny")
    rows = [{"messages": [{"role": "user", "content": f"{i} + {i}?"}, {"role": "assistant", "content": f"{2 * i}"}]}
            for i in range(8)]
    args = SFTConfig(output_dir=str(tmp_path), packing=True, max_length=64, per_device_train_batch_size=2,
                     report_to=[], use_cpu=True, bf16=False, max_steps=1, save_strategy="no")
    data = Dataset.from_list(rows)
    with pytest.raises(ValueError, match="custom data collator"):  # else: pass RowPackedCollator to the constructor
        SFTTrainer(model=model, args=args, train_dataset=data, processing_class=build_tokenizer(),
                   data_collator=RowPackedCollator(pad_token_id=0))
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=build_tokenizer())
    assert isinstance(trainer.data_collator, DataCollatorForLanguageModeling), "touchpoint 5: TRL's collator moved"
    assert trainer_is_padding_free(trainer), "touchpoint 5: TRL's SFTTrainer no longer says it is padding-free"
    assert use_row_packing(trainer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 2, "touchpoint 5: the trainer no longer reads trainer.data_collator"


def test_touchpoint_6_the_released_layout_loads_strictly_only_through_to_fused(tmp_path):
    from safetensors.torch import load_file

    from posttrain.model import save_model

    torch.manual_seed(0)
    trained = load_model("tiny")
    saved = load_file(save_model(trained, None, tmp_path / "ckpt") / "model.safetensors")
    assert any(".mlp.experts.0.gate_proj.weight" in k for k in saved)  # per-expert keys on disk
    missing = torch.nn.Module.load_state_dict(load_model("tiny"), saved, strict=False).missing_keys
    assert "model.layers.1.mlp.experts.gate_up_proj" in missing  # what the Trainer's plain resume load skips
    torch.manual_seed(1)
    fresh = load_model("tiny")
    fresh.load_state_dict(saved, strict=True)  # our override: experts fused, MTP copies dropped
    for (name, a), (_, b) in zip(trained.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    own = fresh.state_dict()
    assert all(to_fused(fresh, own)[k] is v for k, v in own.items())  # the model's own keys pass through
    with pytest.raises(RuntimeError, match="model.layers.1.mlp.not_a_weight"):
        fresh.load_state_dict({**own, "model.layers.1.mlp.not_a_weight": torch.zeros(1)})


def test_touchpoint_7_a_run_resumed_at_max_steps_trains_no_step_past_it(tmp_path):
    from transformers import Trainer, TrainingArguments

    ids = torch.randint(10, 1000, (8, 16), generator=torch.Generator().manual_seed(0)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})

    def trainer() -> Trainer:
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2,
                                 save_steps=2, report_to=[], use_cpu=True, disable_tqdm=True)
        return Trainer(model=load_model("tiny", mtp_loss_weight=0.0), args=args, train_dataset=data)

    trainer().train()
    plain = trainer()
    plain.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert plain.state.global_step == 3  # the Trainer's own behaviour: one step past max_steps
    guarded = trainer()
    guarded.add_callback(StopWhenTrained())
    with pytest.raises(AlreadyTrained):
        guarded.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert guarded.state.global_step == 2


def test_touchpoint_8_an_adapter_with_its_extras_loads_onto_the_base_as_the_merged_model(tmp_path):
    from peft import PeftModel

    from posttrain.model import save_model
    from posttrain.model.lora import add_adapter_extras
    from posttrain.training import ModelArguments, apply_lora

    base = save_model(load_model("tiny"), None, tmp_path / "base")
    torch.manual_seed(0)
    model = apply_lora(load_model(base), ModelArguments(use_peft=True, lora_r=4, lora_routed_experts=True))
    with torch.no_grad():  # adapters that do something, and biases moved outside every adapter (the bias update)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "adapter")
    assert add_adapter_extras(tmp_path / "adapter", model)
    ids = torch.randint(10, 1000, (2, 12))
    merged = load_model(save_model(model, None, tmp_path / "merged")).eval()
    loaded = PeftModel.from_pretrained(load_model(base), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_touchpoint_9_peft_moves_mlp_module_targets_onto_the_fused_experts():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model("tiny"), LoraConfig(r=4, target_modules=["gate_proj", "up_proj", "down_proj"]))
    config = model.peft_config["default"]
    assert not config.target_modules and set(config.target_parameters) == {"gate_up_proj", "down_proj"}, (
        "touchpoint 9: PEFT no longer rewrites gate/up/down_proj module targets for DeepSeek-V3; the dense and "
        "shared MLPs may be targeted as modules again (posttrain.model.lora.MLP_PARAMETERS)"
    )
