"""LoRA for DeepSeek-V3-architecture models (full fine-tuning stays the default).

Targets the MLA projections (q_a/q_b or q, kv_a_proj_with_mqa, kv_b, o), the dense MLPs and the shared experts
(all `nn.Linear`), and optionally the routed experts, whose weights are fused 3-D tensors
(`mlp.experts.gate_up_proj` (E, 2I, D), `mlp.experts.down_proj` (E, D, I)) reached through PEFT's
`target_parameters` (one rank-r adapter per expert; PEFT then needs `lora_dropout=0`). Routers, norms, the
embedding, the head and the MTP input projection are left frozen. `save_model` merges adapters into a plain checkpoint.

The aux-loss-free bias update still moves the routers' `e_score_correction_bias` (a buffer, outside every adapter).
`add_adapter_extras` writes those biases into a saved adapter's own file under PEFT's key names, so plain
`PeftModel.from_pretrained(base, adapter)` (and a LoRA resume) restores them: base + adapter equals the merged model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from posttrain.files import replacing

ADAPTER_FILE = "adapter_model.safetensors"

MLA_MODULES = ["q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]
MLP_MODULES = ["gate_proj", "up_proj", "down_proj"]  # dense MLPs and shared experts
EXPERT_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.0, routed_experts: bool = False) -> LoraConfig:
    """PEFT `LoraConfig` for MLA, dense MLPs and shared experts, plus routed experts if asked.

    >>> sorted(lora_config(routed_experts=True).target_parameters)
    ['mlp.experts.down_proj', 'mlp.experts.gate_up_proj']
    """
    if routed_experts and dropout != 0:
        raise ValueError(f"lora dropout={dropout}: PEFT's target_parameters (routed experts) needs dropout=0")
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=MLA_MODULES + MLP_MODULES,
        target_parameters=EXPERT_PARAMETERS if routed_experts else None,
        task_type="CAUSAL_LM",
    )


def apply_lora(model: PreTrainedModel, **kwargs) -> PeftModel:
    """Wrap `model` with LoRA adapters from `lora_config(**kwargs)`; only the adapters train.

    >>> peft_model = apply_lora(load_model("tiny"), r=8, routed_experts=True)  # doctest: +SKIP
    """
    return get_peft_model(model, lora_config(**kwargs))


def merge_lora(model: PeftModel) -> PreTrainedModel:
    """Fold the adapters into the base weights (in place) and return the plain model."""
    return model.merge_and_unload()


def adapter_extras(model: nn.Module) -> dict[str, torch.Tensor]:
    """What LoRA training changes outside the adapters, keyed as the model (a `PeftModel`) names it: the routers'
    `e_score_correction_bias` (the bias update)."""
    return {name: buf.detach().cpu().clone() for name, buf in model.named_buffers()
            if name.endswith("e_score_correction_bias")}


def add_adapter_extras(adapter_dir: str | os.PathLike, model: nn.Module) -> bool:
    """Add `adapter_extras(model)` to the adapter file saved in `adapter_dir` (rewritten atomically); False where
    there is no adapter file.

    >>> add_adapter_extras("runs/lora/checkpoint-200", trainer.model)  # doctest: +SKIP
    True
    """
    file = Path(adapter_dir) / ADAPTER_FILE
    if not file.is_file():
        return False
    tensors = load_file(str(file)) | adapter_extras(model)
    with replacing(file) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return True
