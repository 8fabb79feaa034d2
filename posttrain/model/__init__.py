"""DeepSeek-V3-architecture models for post-training: transformers' definition plus MTP and load balancing.

>>> from posttrain.model import load_model, save_model
>>> model = load_model("tiny")
"""

from posttrain.model.balance import balance_step, sequence_balance_loss, update_bias
from posttrain.model.callbacks import MoETrainingCallback, add_training_callbacks, training_callbacks
from posttrain.model.io import load_config, load_model, load_reward_model, load_tokenizer, save_model
from posttrain.model.lora import merge_lora
from posttrain.model.modeling import DeepseekV3MTPForCausalLM, DeepseekV3MTPOutput
from posttrain.model.presets import PRESETS
from posttrain.model.router_stats import RouterLoads, max_violation

__all__ = [
    "PRESETS",
    "DeepseekV3MTPForCausalLM",
    "DeepseekV3MTPOutput",
    "MoETrainingCallback",
    "RouterLoads",
    "add_training_callbacks",
    "balance_step",
    "load_config",
    "load_model",
    "load_reward_model",
    "load_tokenizer",
    "max_violation",
    "merge_lora",
    "save_model",
    "sequence_balance_loss",
    "training_callbacks",
    "update_bias",
]
