"""GRPO on a DeepSeek-V3-architecture model with rule-based and model-based rewards.

    accelerate launch recipes/grpo.py --config recipes/configs/tiny/grpo.yaml [--key value ...]

TRL's `GRPOTrainer` does the RL (loss variants, KL beta, group size, clipping, vLLM modes: all GRPOConfig keys
work in the YAML). This script adds what TRL lacks for this model family: rewards resolved from specs (builtins,
`module:function`, `file.py:function`, plugins, `{name: ..., **params}`) and checked against the dataset's columns
before training, the auxiliary-loss-free bias update with router metrics, and an atomic final checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig, TrlParser

import rewards
from data_tools import load_prompts
from posttrain.errors import exit_on_user_error, option, parse_config
from posttrain.training import (
    GRPOTrainer,
    ModelArguments,
    build_model_and_tokenizer,
    finish,
    peft_config,
    train,
)
from rewards.failure_callback import RewardFailuresCallback


@dataclass
class GRPOScriptArguments:
    """The prompts and the rewards."""

    reward_funcs: list[str] = field(  # YAML may give dicts: defaults skip argparse types
        default_factory=lambda: ["math", "format"],
        metadata={"help": "Reward specs: builtin names (`posttrain rewards list`), module:function, file.py:function, "
                  "plugin names, or {name: ..., **params} (JSON on the command line). Weights: --reward_weights."},
    )
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Prompts: any dataset the mix builder reads (JSONL/Parquet/CSV, datasets dir, mix output) "
                  "with the rewards' columns. Unset: the builtin tasks below."},
    )
    tasks: list[str] = field(default_factory=lambda: ["arithmetic"], metadata={"help": "Builtin tasks for prompts."})
    unlabeled_tasks: list[str] = field(
        default_factory=list, metadata={"help": "Builtin tasks adding num_prompts prompts each without labels (no "
                                                "solution, tests or reference; other problems than the labelled ones "
                                                "of the same task): for rewards that read no gold, e.g. vote."}
    )
    num_prompts: int = field(default=2000, metadata={"help": "Builtin prompts per task (train split)."})
    unlabeled_prompts: int | None = field(default=None, metadata={"help": "Prompts per unlabeled task (default: "
                                                                          "num_prompts)."})
    task_options: str | None = field(  # YAML may give a mapping directly
        default=None, metadata={"help": "Options of the builtin task generator, a JSON object (e.g. digit counts)."}
    )
    prompts_seed: int = field(default=0, metadata={"help": "Seed of the builtin prompts."})


@dataclass
class GRPOModelArguments(ModelArguments):
    """`ModelArguments` with RL's own default: the MTP loss off (refresh the MTP module afterwards instead, with
    `recipes/mtp_refresh.py`)."""

    mtp_loss_weight: float | None = field(
        default=0.0, metadata={"help": "lambda of the MTP loss; 0 (the default in RL) leaves the MTP module as it is."}
    )


def _json(value: Any) -> Any:
    """Command-line values come as JSON strings; YAML ones arrive already parsed."""
    return json.loads(value) if isinstance(value, str) and value.lstrip().startswith("{") else value


def main(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: GRPOModelArguments) -> None:
    with option("--reward_funcs"):
        reward_funcs = [rewards.get_reward(_json(spec)) for spec in script_args.reward_funcs]
    with option("--dataset_path" if script_args.dataset_path else "--tasks"):
        dataset = load_prompts(
            script_args.dataset_path, tasks=script_args.tasks, n=script_args.num_prompts,
            seed=script_args.prompts_seed, split="train",
            unlabeled=script_args.unlabeled_tasks, unlabeled_n=script_args.unlabeled_prompts,
            **(_json(script_args.task_options) or {}),
        )
    rewards.check_columns(reward_funcs, dataset.column_names, rows=dataset)

    model, tokenizer = build_model_and_tokenizer(model_args, seed=training_args.seed)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(model_args),
        callbacks=[RewardFailuresCallback(reward_funcs)],
    )
    rewards.bind_policy(reward_funcs, trainer.model, tokenizer)  # self_judge grades with the live policy
    train(trainer, model_args)
    finish(trainer, tokenizer)


if __name__ == "__main__":
    with exit_on_user_error("recipes/grpo.py"):
        parser = TrlParser((GRPOScriptArguments, GRPOConfig, GRPOModelArguments))
        main(*parse_config(parser.parse_args_and_config))
