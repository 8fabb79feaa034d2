"""Saved checkpoints carry what vLLM and SGLang read: the released config's keys and the MTP weight names their
DeepSeek MTP loaders expect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import TrainerControl, TrainerState, TrainingArguments

from posttrain.model import load_model, save_model
from posttrain.model.callbacks import CheckpointFilesCallback
from posttrain.model.presets import PRESETS
from posttrain.model.released_config import NOT_WRITTEN

# The released deepseek-ai/DeepSeek-V3 config.json (see tests/posttrain/data/README.md for its provenance).
RELEASED = json.loads((Path(__file__).parent / "data" / "deepseek_v3_config.json").read_text())
# Keys whose values are the architecture's, not the model size's: a tiny model must write the released values.
ROUTER_KEYS = ("topk_method", "scoring_func", "moe_layer_freq", "seq_aux", "ep_size", "norm_topk_prob",
               "hidden_act", "model_type", "architectures")


def _config(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "config.json").read_text())


def _weight_names(checkpoint: Path) -> set[str]:
    names = set()
    for file in checkpoint.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            names.update(f.keys())
    return names


def test_saved_config_has_every_key_of_the_released_config(tiny_checkpoint):
    config = _config(tiny_checkpoint)
    missing = set(RELEASED) - set(config) - set(NOT_WRITTEN)
    assert not missing, f"keys of the released config.json not written: {sorted(missing)}"
    for key in ROUTER_KEYS:
        assert config[key] == RELEASED[key], key
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert config["rope_scaling"] is None  # the tiny preset has no YaRN scaling
    assert config["torch_dtype"] == config["dtype"] == "float32"


def test_released_keys_a_loaded_checkpoint_carries_are_kept(tmp_path):
    # The released config at the tiny preset's sizes: its own values (aux_loss_alpha, YaRN rope) must survive.
    sizes = {k: v for k, v in PRESETS["tiny"].items() if k not in ("routed_scaling_factor", "tie_word_embeddings")}
    released = {k: v for k, v in RELEASED.items() if k not in NOT_WRITTEN} | sizes
    (tmp_path / "released.json").write_text(json.dumps(released))
    model = load_model(tmp_path / "released.json")
    out = save_model(model, None, tmp_path / "ckpt")
    config = _config(out)
    for key in ("aux_loss_alpha", "topk_method", "scoring_func", "moe_layer_freq", "seq_aux", "rope_theta",
                "pretraining_tp", "ep_size", "routed_scaling_factor"):
        assert config[key] == released[key], key
    assert {k: config["rope_scaling"][k] for k in RELEASED["rope_scaling"]} == RELEASED["rope_scaling"]
    again = load_model(out)  # and transformers reads the file back to the same rope
    assert again.config.rope_parameters == model.config.rope_parameters
    assert again.config.rope_parameters["factor"] == 40


def test_trainer_checkpoints_get_the_released_keys_and_architecture(tmp_path):
    load_model("tiny").save_pretrained(tmp_path / "checkpoint-3")  # what the Trainer writes
    assert _config(tmp_path / "checkpoint-3")["architectures"] == ["DeepseekV3MTPForCausalLM"]
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    CheckpointFilesCallback().on_save(args, TrainerState(global_step=3), TrainerControl())
    config = _config(tmp_path / "checkpoint-3")
    assert config["architectures"] == ["DeepseekV3ForCausalLM"]
    assert set(RELEASED) - set(config) <= set(NOT_WRITTEN)


def _mtp_layers(names: set[str]) -> dict[int, set[str]]:
    layers: dict[int, set[str]] = {}
    for name in names:
        match = re.match(r"model\.layers\.(\d+)\.(.+)", name)
        if match:
            layers.setdefault(int(match[1]), set()).add(match[2])
    return layers


def test_mtp_weights_have_the_names_vllm_deepseek_mtp_loads(tiny_checkpoint):
    # vLLM vllm-project/vllm `vllm/model_executor/models/deepseek_mtp.py` (DeepSeekMTP.load_weights and
    # `_rewrite_spec_layer_name`) with `get_spec_layer_idx_from_weight_name` from `deepseek_v2.py`: MTP layer k
    # is `model.layers.{num_hidden_layers + k}.*`, k < num_nextn_predict_layers; under it `embed_tokens` (loaded
    # as the shared embedding), `enorm`, `hnorm`, `eh_proj`, `shared_head.norm`, `shared_head.head`, and every
    # other name is the decoder block (`mtp_block`), named like a main-model MoE layer.
    config, names = _config(tiny_checkpoint), _weight_names(tiny_checkpoint)
    n, depth = config["num_hidden_layers"], config["num_nextn_predict_layers"]
    layers = _mtp_layers(names)
    assert sorted(i for i in layers if i >= n) == list(range(n, n + depth))
    specific = {"embed_tokens.weight", "enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
                "shared_head.head.weight"}
    main_moe_layer = layers[n - 1]  # the last main layer is a MoE layer (layer >= first_k_dense_replace)
    for i in range(n, n + depth):
        assert specific <= layers[i]
        assert layers[i] - specific == main_moe_layer  # the block: attention, router (bias too), experts, norms
    assert "mlp.gate.e_score_correction_bias" in main_moe_layer and config["topk_method"] == "noaux_tc"
    with safe_open(str(next(tiny_checkpoint.glob("model.safetensors"))), "pt") as f:
        eh = f.get_tensor(f"model.layers.{n}.eh_proj.weight")
    assert tuple(eh.shape) == (config["hidden_size"], 2 * config["hidden_size"])  # nn.Linear(2 * hidden, hidden)


def test_mtp_weights_have_the_names_sglang_deepseek_nextn_loads(tiny_checkpoint):
    # SGLang sgl-project/sglang `python/sglang/srt/models/deepseek_nextn.py` (DeepseekV3ForCausalLMNextN, whose
    # load_weights is DeepseekV3ForCausalLM.load_weights(is_nextn=True) in `deepseek_v2.py`): exactly one NextN
    # layer, at `model.layers.{num_hidden_layers}` (0 only for a one-layer draft config); `shared_head.norm`,
    # `eh_proj`, `enorm`, `hnorm` go to the NextN module, `shared_head.head` and `embed_tokens` are skipped (taken
    # from the target model), every other name is the decoder layer.
    config, names = _config(tiny_checkpoint), _weight_names(tiny_checkpoint)
    assert config["num_nextn_predict_layers"] == 1
    prefix = f"model.layers.{config['num_hidden_layers']}."
    nextn = {name[len(prefix):] for name in names if name.startswith(prefix)}
    for spec in ("shared_head.norm.weight", "eh_proj.weight", "enorm.weight", "hnorm.weight"):
        assert spec in nextn
    decoder = {k for k in nextn if not k.startswith(("shared_head", "eh_proj", "enorm", "hnorm", "embed_tokens"))}
    assert {"self_attn.q_a_proj.weight", "self_attn.kv_a_proj_with_mqa.weight", "mlp.gate.weight",
            "mlp.gate.e_score_correction_bias", "mlp.experts.0.gate_proj.weight", "mlp.shared_experts.up_proj.weight",
            "input_layernorm.weight", "post_attention_layernorm.weight"} <= decoder
    assert config["architectures"] == ["DeepseekV3ForCausalLM"]  # SGLang swaps in ...NextN for the draft itself


def test_mtp_shared_copies_equal_the_main_embedding_and_head(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    n = model.config.num_hidden_layers
    with safe_open(str(tiny_checkpoint / "model-mtp-shared.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor(f"model.layers.{n}.embed_tokens.weight"), model.model.embed_tokens.weight)
        assert torch.equal(f.get_tensor(f"model.layers.{n}.shared_head.head.weight"), model.lm_head.weight)
