"""The released DeepSeek-V3 `config.json` keys that serving engines read and transformers 5 does not write.

transformers' `DeepseekV3Config` keeps rope settings only as `rope_parameters` and the dtype as `dtype`, and its
defaults lack the router keys of the released config. Engines read them:

- vLLM (`model_executor/models/deepseek_v2.py`) creates `mlp.gate.e_score_correction_bias` only when
  `topk_method == "noaux_tc"` (otherwise loading the saved bias fails) and scores with softmax unless
  `scoring_func == "sigmoid"`; it places MoE layers with `moe_layer_freq`.
- SGLang (`models/deepseek_v2.py`) reads `config.topk_method` directly and raises without it.
- Readers built for transformers 4 read top-level `rope_theta`, `rope_scaling` and `torch_dtype`.

`write_released_keys` adds them to a saved `config.json`, keeping every value the config already has (a checkpoint
loaded from the released files carries its own), and names the architecture engines dispatch on. Left out on
purpose: `auto_map` (it points at remote modeling code we do not ship) and `quantization_config` (our weights are
not FP8; engines would look for scale tensors).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from posttrain.files import write_atomic
from posttrain.model.modeling import SEQ_BALANCE_ALPHA

# Values of the released config (deepseek-ai/DeepSeek-V3) for the architecture these models share.
RELEASED_DEFAULTS: dict[str, Any] = {
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "moe_layer_freq": 1,
    "seq_aux": True,
    "ep_size": 1,
    "pretraining_tp": 1,
}
NOT_WRITTEN = ("auto_map", "quantization_config")
ARCHITECTURE = "DeepseekV3ForCausalLM"


def released_config(config: dict[str, Any], architecture: str = ARCHITECTURE) -> dict[str, Any]:
    """`config` (a saved config.json's mapping) with the released keys added (values already there win) and
    `architecture` as the one `architectures` entry.

    >>> c = released_config({"model_type": "deepseek_v3", "dtype": "bfloat16", "seq_balance_alpha": 0.0,
    ...                      "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}})
    >>> c["topk_method"], c["scoring_func"], c["rope_theta"], c["rope_scaling"], c["torch_dtype"]
    ('noaux_tc', 'sigmoid', 10000.0, None, 'bfloat16')
    """
    out = {**RELEASED_DEFAULTS, **config, "architectures": [architecture]}
    rope = dict(config.get("rope_parameters") or {})
    if "rope_theta" in rope:
        out.setdefault("rope_theta", rope["rope_theta"])
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    if scaling.get("rope_type", "default") != "default":
        scaling.setdefault("type", scaling["rope_type"])  # the released spelling beside transformers' one
        out.setdefault("rope_scaling", scaling)
    else:
        out.setdefault("rope_scaling", None)
    if config.get("dtype") is not None:
        out.setdefault("torch_dtype", config["dtype"])
    # The released name of the sequence-wise balance loss coefficient (ours: seq_balance_alpha).
    out.setdefault("aux_loss_alpha", config.get("seq_balance_alpha", SEQ_BALANCE_ALPHA))
    return out


def write_released_keys(checkpoint: str | os.PathLike, architecture: str = ARCHITECTURE) -> bool:
    """Rewrite `checkpoint/config.json` (atomically) with the released keys and `architecture`; False where there
    is no DeepSeek-V3 config (e.g. a LoRA adapter dir)."""
    file = Path(checkpoint) / "config.json"
    if not file.is_file():
        return False
    config = json.loads(file.read_text())
    if config.get("model_type") != "deepseek_v3":
        return False
    write_atomic(file, json.dumps(released_config(config, architecture), indent=2, sort_keys=True) + "\n")
    return True
