"""Load and save DeepSeek-V3-architecture checkpoints in the Hugging Face layout, MTP included.

On disk the MTP module of depth k lives under the released DeepSeek-V3 names, `model.layers.{L+k-1}.*` with L =
`num_hidden_layers`: `enorm`, `hnorm`, `eh_proj`, `shared_head.norm`, the decoder block (`self_attn.*`,
`mlp.*` with per-expert keys, `input_layernorm`, `post_attention_layernorm`), plus copies of the shared embedding
and head (`embed_tokens.weight`, `shared_head.head.weight`) because the released checkpoints and vLLM's MTP
loader expect them. Plain `AutoModelForCausalLM.from_pretrained` reads the main model and reports the MTP keys as
unexpected; `load_model` restores them exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoTokenizer, DeepseekV3Config, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3ForSequenceClassification,
    DeepseekV3TopkRouter,
)

from posttrain.errors import MissingFileError, UserError
from posttrain.files import replacing, replacing_dir, write_atomic
from posttrain.model.distributed import (
    DistributedConfig,
    check_experts_split,
    distribute,
    gather_state_dict,
    sharded_at_load,
)
from posttrain.model.modeling import DeepseekV3MTPForCausalLM
from posttrain.model.presets import PRESETS
from posttrain.model.released_config import ARCHITECTURE, write_released_keys
from posttrain.tokenizer import build_tokenizer

MTP_COPIES_FILE = "model-mtp-shared.safetensors"


def _check_routing(config: DeepseekV3Config, where: str) -> DeepseekV3Config:
    """Reject group-limited routing settings that transformers accepts but cannot run."""
    e, groups, top_groups, k = config.n_routed_experts, config.n_group, config.topk_group, config.num_experts_per_tok
    if e % groups:
        raise UserError(f"{where}: n_routed_experts={e} must be divisible by n_group={groups}")
    if top_groups > groups or k > e // groups * top_groups or e // groups < 2:
        raise UserError(
            f"{where}: top-{k} from the best topk_group={top_groups} of n_group={groups} groups of {e // groups} "
            "experts is impossible (need topk_group <= n_group, >= 2 experts per group, and "
            "num_experts_per_tok <= experts per group * topk_group)"
        )
    return config


def load_config(source: str | os.PathLike, **overrides: Any) -> DeepseekV3Config:
    """A `DeepseekV3Config` from a preset name, a checkpoint dir or a `config.json` path, with field overrides.

    >>> load_config("tiny", mtp_loss_weight=0.3).mtp_loss_weight
    0.3
    """
    name = str(source)
    if name in PRESETS:
        return _check_routing(DeepseekV3Config(**{**PRESETS[name], **overrides}), f"preset {name!r}")
    path = Path(source)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        what = f"no config.json in directory {path}" if path.is_dir() else f"no such preset or path {name!r}"
        raise MissingFileError(f"{what}; give a preset ({', '.join(PRESETS)}), a checkpoint dir or a config.json")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{file}: not a JSON config.json ({e})") from e
    if raw.get("model_type") != "deepseek_v3":
        raise UserError(
            f"{file}: model_type is {raw.get('model_type')!r}, expected 'deepseek_v3' "
            "(this package builds DeepSeek-V3-architecture models only)"
        )
    config = DeepseekV3Config.from_pretrained(file.parent if file.name == "config.json" else file)
    for key, value in overrides.items():
        setattr(config, key, value)
    return _check_routing(config, str(file))


def load_model(
    source: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    distributed: DistributedConfig | None = None,
    **overrides: Any,
) -> DeepseekV3MTPForCausalLM:
    """Our model from a preset (random init), a `config.json` (random init) or a checkpoint dir (weights, MTP too).

    `overrides` are config fields, e.g. `mtp_loss_weight=0.3` (0 freezes MTP), `seq_balance_alpha=1e-4`,
    `num_nextn_predict_layers=0` (no MTP module at all). `distributed` (`posttrain.model.distributed`) shards the
    model over the processes at load: expert parallelism, FSDP2.

    >>> model = load_model("tiny", mtp_loss_weight=0.3)
    >>> model.mtp_loss_weight
    0.3
    """
    config = load_config(source, **overrides)
    model = _build(DeepseekV3MTPForCausalLM, source, config, dtype, distributed)
    model.freeze_idle_mtp()
    return model


def load_tokenizer(source: str | os.PathLike | None) -> PreTrainedTokenizerBase:
    """The tokenizer of a model source, as `load_model` takes them: a checkpoint dir's own tokenizer; the embedded
    offline one (`posttrain.tokenizer.build_tokenizer`) for None, a preset, a `config.json` or a dir without
    tokenizer files; otherwise `AutoTokenizer` (a tokenizer dir or hub name), whose failure names the source.

    >>> len(load_tokenizer("tiny")) == len(load_tokenizer(None))
    True
    """
    if source is None or str(source) in PRESETS:
        return build_tokenizer()
    path = Path(source)
    if path.exists() and not (path.is_dir() and any(path.glob("tokenizer*.json"))):
        return build_tokenizer()  # a bare config: random init takes the offline tokenizer
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001 - any loading failure names the source
        raise UserError(f"tokenizer: cannot load {str(source)!r} (a tokenizer dir or hub name): {exc}") from None


def _build(cls: type[PreTrainedModel], source: str | os.PathLike, config: DeepseekV3Config,
           dtype: torch.dtype | None, distributed: DistributedConfig | None = None) -> PreTrainedModel:
    """`cls` with the weights of a checkpoint dir, or randomly initialised from `config`; sharded over the
    processes at load with `distributed`."""
    path = Path(source)
    if path.is_dir() and any(path.glob("*.safetensors")):
        if distributed is None:
            return cls.from_pretrained(path, config=config, dtype=dtype)
        check_experts_split(config, distributed)
        return cls.from_pretrained(path, config=config, dtype=dtype, distributed_config=distributed)
    model = cls(config)
    if dtype is not None:
        model.to(dtype)
        for router in model.modules():  # as from_pretrained does: the bias needs fp32 for gamma-sized steps
            if isinstance(router, DeepseekV3TopkRouter):
                router.e_score_correction_bias = router.e_score_correction_bias.float()
    return model if distributed is None else distribute(model, distributed)


def load_reward_model(
    source: str | os.PathLike, *, dtype: torch.dtype | None = None, pad_token_id: int | None = None, **overrides: Any
) -> DeepseekV3ForSequenceClassification:
    """A reward model: transformers' `DeepseekV3ForSequenceClassification` with one output (the score head reads
    the last non-pad token), its backbone from a checkpoint dir (e.g. an SFT model; the MTP module and LM head are
    not used and stay behind) or randomly initialised from a preset or config. A reward-model checkpoint loads
    with its trained head.

    >>> load_reward_model("tiny", pad_token_id=2).score.out_features
    1
    """
    config = load_config(source, num_labels=1, **overrides)
    config.pad_token_id = pad_token_id if pad_token_id is not None else config.pad_token_id
    return _build(DeepseekV3ForSequenceClassification, source, config, dtype)


def _unwrap(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None) -> PreTrainedModel:
    """The plain model to save: a PEFT model's adapters merged; with a gathered `state_dict` of a PEFT model (whose
    live weights are shards), merged on a CPU copy built from it."""
    if state_dict is not None and hasattr(model, "peft_config"):
        base = model.get_base_model()
        with torch.device("cpu"):
            copy = get_peft_model(type(base)(base.config), model.peft_config[model.active_adapter])
        copy.load_state_dict(state_dict)
        model = copy
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model


def add_mtp_copies(checkpoint: str | os.PathLike) -> bool:
    """Give a saved checkpoint the released layout's per-MTP-layer copies of the embedding and head, indexed.

    The shared tensors are read back from the checkpoint's own files, so this works after any save that wrote full
    weights (`save_model`, the Trainer's `checkpoint-N`). Returns False and writes nothing where there are no full
    weights (LoRA adapters, sharded FSDP states), no MTP layers, or the copies are there already. Each file is
    written to a temporary name and renamed, the index last, so a kill leaves a loadable checkpoint.

    >>> add_mtp_copies("runs/sft/checkpoint-200")  # doctest: +SKIP
    True
    """
    out = Path(checkpoint)
    index_file, single = out / "model.safetensors.index.json", out / "model.safetensors"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
    elif single.is_file():
        with safe_open(str(single), "pt") as f:
            index = {"metadata": {}, "weight_map": dict.fromkeys(f.keys(), single.name)}
    else:
        return False
    weight_map = index["weight_map"]
    n = json.loads((out / "config.json").read_text())["num_hidden_layers"]
    mtp = sorted({int(k.split(".")[2]) for k in weight_map if k.startswith("model.layers.")} - set(range(n)))
    if not mtp or f"model.layers.{mtp[0]}.shared_head.head.weight" in weight_map:  # none, or copies already there
        return False

    def tensor(key: str) -> torch.Tensor:
        with safe_open(str(out / weight_map[key]), "pt") as f:
            return f.get_tensor(key)

    embed = tensor("model.embed_tokens.weight")
    head = tensor("lm_head.weight") if "lm_head.weight" in weight_map else embed  # tied embeddings: one tensor
    copies = {}
    for i in mtp:
        copies[f"model.layers.{i}.embed_tokens.weight"] = embed
        copies[f"model.layers.{i}.shared_head.head.weight"] = head
    with replacing(out / MTP_COPIES_FILE) as tmp:
        save_file(copies, str(tmp), metadata={"format": "pt"})
    meta = index["metadata"]
    if "total_size" in meta:  # sharded: keep the recorded totals right
        meta["total_size"] += sum(t.numel() * t.element_size() for t in copies.values())
    if "total_parameters" in meta:
        meta["total_parameters"] += sum(t.numel() for t in copies.values())
    weight_map.update(dict.fromkeys(copies, MTP_COPIES_FILE))
    write_atomic(index_file, json.dumps(index, indent=2, sort_keys=True))
    return True


def _save_gathered(model, tokenizer: PreTrainedTokenizerBase | None, output_dir: str | os.PathLike,
                   extra_files: dict[str, str] | None) -> Path | None:
    state = gather_state_dict(model)
    out = None
    if torch.distributed.get_rank() == 0:
        # Without its DistributedConfig the model writes the gathered tensors as given (with it, save_pretrained
        # would gather again, a collective the other ranks are not in) and config.json stays a plain one.
        sharding = model.config.distributed_config
        del model.config.distributed_config
        try:
            out = save_model(model, tokenizer, output_dir, extra_files, state_dict=state)
        finally:
            model.config.distributed_config = sharding
    torch.distributed.barrier()
    return out


def save_model(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase | None, output_dir: str | os.PathLike,
    extra_files: dict[str, str] | None = None, state_dict: dict[str, torch.Tensor] | None = None,
) -> Path | None:
    """Write an HF checkpoint (safetensors, config.json, tokenizer) atomically; PEFT adapters are merged first.
    `extra_files` (name -> text, e.g. evaluation results) are written into it in the same atomic step.

    `state_dict`: the whole model's weights gathered from a sharding engine (ZeRO-3, FSDP), where `model`'s own
    parameters are shards; it is written instead (LoRA: merged on a CPU copy of the model). The checkpoint is
    written to a temporary sibling directory and renamed into place, so `output_dir` is only ever absent, the
    previous complete checkpoint, or the new complete one. A model sharded at load (`posttrain.model.distributed`,
    expert parallelism) is gathered here: every rank calls this, rank 0 writes and returns the path, the others
    return None once it is written.

    config.json carries the released DeepSeek-V3 keys serving engines read (`posttrain.model.released_config`).

    >>> out = save_model(load_model("tiny"), build_tokenizer(), tmp_path / "ckpt")  # doctest: +SKIP
    """
    if sharded_at_load(model) and state_dict is None:
        return _save_gathered(model, tokenizer, output_dir, extra_files)
    merged = _unwrap(model, state_dict)
    if merged is not model:  # adapters merged: the merged model's own weights are the ones to write
        model, state_dict = merged, None
    out = Path(output_dir)
    with replacing_dir(out) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        add_mtp_copies(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        # What AutoModel, vLLM and SGLang dispatch on: transformers' class name for ours, a head's own otherwise
        # (a reward model is a DeepseekV3ForSequenceClassification); and the released keys engines read.
        own = type(model).__name__
        write_released_keys(tmp, ARCHITECTURE if isinstance(model, DeepseekV3MTPForCausalLM) else own)
    return out
