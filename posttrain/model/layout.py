"""The released checkpoint layout versus transformers' in-memory one: one owner of the key mapping.

On disk (the released DeepSeek-V3 layout, vLLM's and what `save_pretrained` writes by default) every routed expert
has its own keys, `mlp.experts.{e}.{gate,up,down}_proj.weight`, and each MTP layer repeats the shared embedding and
head (`model.layers.{L+k-1}.embed_tokens.weight`, `.shared_head.head.weight`). In memory transformers fuses the
experts into `mlp.experts.gate_up_proj` (E, 2I, D) and `mlp.experts.down_proj` (E, D, I), converting on
`from_pretrained` only. `torch.nn.Module.load_state_dict` (the Trainer's resume, any custom loop) sees the saved
keys as unexpected and keeps the initial experts; `to_fused` converts a saved state dict with transformers' own
conversion mapping first.

Touchpoints (transformers 5.24): `conversion_mapping.get_model_conversion_mapping` and
`core_model_loading.convert_and_load_state_dict_in_model` with `modeling_utils.LoadStateDictConfig`; tested in
tests/posttrain/test_layout.py.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import convert_and_load_state_dict_in_model
from transformers.modeling_utils import LoadStateDictConfig

# The released checkpoints' per-MTP-layer copies of the shared embedding and head (the model uses the main ones).
MTP_COPY_KEY = re.compile(r"(^|\.)model\.layers\.\d+\.(embed_tokens|shared_head\.head)\.weight$")


def to_fused(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` with released-layout keys converted to `model`'s own (fused experts), MTP copies dropped.

    Keys the model has pass through unchanged (a state dict from `model.state_dict()` is returned as is); the
    conversion runs on a meta-device twin of `model`, so the live model's parameters are not replaced.

    >>> model = load_model("tiny")                                         # doctest: +SKIP
    >>> saved = safetensors.torch.load_file("checkpoint-2/model.safetensors")  # doctest: +SKIP
    >>> model.load_state_dict(to_fused(model, saved), strict=True)         # doctest: +SKIP
    """
    own = model.state_dict()
    state_dict = {k: v for k, v in state_dict.items() if not MTP_COPY_KEY.search(k)}
    if all(k in own for k in state_dict):
        return state_dict
    with torch.device("meta"):
        twin = type(model)(model.config)
    load_config = LoadStateDictConfig(weight_mapping=get_model_conversion_mapping(twin), device_map={"": "cpu"})
    info, _ = convert_and_load_state_dict_in_model(twin, dict(state_dict), load_config)
    converted = {k: v for k, v in twin.state_dict().items() if not v.is_meta}
    # keys the model does not know stay, so a strict load still names them
    converted.update({k: state_dict[k] for k in info.unexpected_keys if k in state_dict})
    return converted
