"""Parameter and KV-cache figures of a DeepSeek-V3-architecture config, computed on the meta device (no memory).

    total_params        main model (embedding and head included), without MTP
    activated_params    per token: total minus the routed experts a token does not use, (E - K) per MoE layer
    mtp_params          the MTP modules as the released checkpoint stores them (their copies of embedding and head
                        included: 14B for DeepSeek-V3, whose 685B = 671B + 14B)
    kv_cache_bytes_per_token      bf16 MLA cache: (kv_lora_rank + qk_rope_head_dim) per layer
    mha_kv_cache_bytes_per_token  bf16 full K and V of the same heads: H * (qk_head_dim + v_head_dim) per layer
"""

from __future__ import annotations

import torch
from transformers import DeepseekV3Config

from posttrain.model.modeling import DeepseekV3MTPForCausalLM

BF16_BYTES = 2


def model_info(config: DeepseekV3Config) -> dict[str, int]:
    """Figures of `config` (see the module docstring), as plain ints.

    >>> from posttrain.model import load_config
    >>> round(model_info(load_config("deepseek-v3"))["total_params"] / 1e9)
    671
    """
    with torch.device("meta"):
        model = DeepseekV3MTPForCausalLM(config)
    n = config.num_hidden_layers
    main_layers, mtp_layers = model.model.layers[:n], model.model.layers[n:]
    mtp_own = sum(p.numel() for p in mtp_layers.parameters())
    shared = model.model.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    total = sum(p.numel() for p in model.parameters()) - mtp_own
    inactive = 0
    for layer in main_layers:
        experts = getattr(layer.mlp, "experts", None)
        if experts is not None:
            per_expert = sum(p[0].numel() for p in experts.parameters())  # (E, ...) fused tensors
            inactive += (experts.num_experts - config.num_experts_per_tok) * per_expert
    qk_head_dim = config.qk_nope_head_dim + config.qk_rope_head_dim
    return {
        "total_params": total,
        "activated_params": total - inactive,
        "mtp_params": mtp_own + len(mtp_layers) * shared,
        "kv_cache_bytes_per_token": n * (config.kv_lora_rank + config.qk_rope_head_dim) * BF16_BYTES,
        "mha_kv_cache_bytes_per_token": n
        * config.num_attention_heads
        * (qk_head_dim + config.v_head_dim)
        * BF16_BYTES,
    }
