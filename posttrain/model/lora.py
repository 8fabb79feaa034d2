"""LoRA for DeepSeek-V3-architecture models (full fine-tuning stays the default).

Targets the MLA projections (q_a/q_b or q, kv_a_proj_with_mqa, kv_b, o) as modules, the dense MLPs and the shared
experts through PEFT's `target_parameters` on their `weight`s, and optionally the routed experts, whose weights are
fused 3-D tensors (`mlp.experts.gate_up_proj` (E, 2I, D), `mlp.experts.down_proj` (E, D, I); one rank-r adapter
per expert). PEFT needs `lora_dropout=0` with `target_parameters`. Routers, norms, the embedding, the head and the
MTP input projection are left frozen. The dense and shared MLPs are named by parameter, not as the modules
`gate_proj`/`up_proj`/`down_proj`, because PEFT reads those module names as transformers-v4 expert names and moves
them onto the fused routed experts (touchpoint 9 in `posttrain.touchpoints`). The targets are the defaults of
`posttrain.training.ModelArguments`, whose LoRA config TRL's `get_peft_config` builds (`posttrain.training.apply_lora`
outside a trainer). `save_model` merges adapters into a plain checkpoint.

The aux-loss-free bias update still moves the routers' `e_score_correction_bias` (a buffer, outside every adapter).
`add_adapter_extras` writes those biases into a saved adapter's own file under PEFT's key names, so plain
`PeftModel.from_pretrained(base, adapter)` (and a LoRA resume) restores them: base + adapter equals the merged model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from posttrain.files import replacing

ADAPTER_FILE = "adapter_model.safetensors"

MLA_MODULES = ["q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]
MLP_PARAMETERS = [f"{mlp}.{proj}.weight" for mlp in ("mlp", "shared_experts")
                  for proj in ("gate_proj", "up_proj", "down_proj")]  # dense MLPs and shared experts
EXPERT_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


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
