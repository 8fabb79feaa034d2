"""Bradley-Terry reward-model training of a DeepSeek-V3-architecture model on preference pairs.

    accelerate launch recipes/reward_model.py --config recipes/configs/tiny/reward_model.yaml [--key value ...]

TRL's `RewardTrainer` trains (the pairwise loss -log sigmoid(r_chosen - r_rejected), LoRA through PEFT, checkpoints,
eval with pairwise accuracy). This script adds what it lacks for this model family: the reward model built from an
SFT checkpoint's backbone (`DeepseekV3ForSequenceClassification`, one output), preference data from any file
`data_tools` reads in a TRL preference layout (or a `posttrain data preferences` dir with its held-out split, or
pairs sampled here first from a `preferences:` config, as `recipes/distill.py` samples its traces), the
auxiliary-loss-free bias update with router metrics, resuming only from complete checkpoints, and an atomic
`output_dir/final` that `AutoModelForSequenceClassification` and the `reward_model` reward load as they are, with
its held-out pairwise accuracy in `final/reward_eval.json`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace

from trl import RewardConfig, TrlParser

from data_tools import load_preference_splits
from data_tools.preferences import load_preference_config, run_preferences
from posttrain.cpu_threads import set_cpu_threads
from posttrain.errors import UserError, exit_on_user_error, option, parse_config
from posttrain.training import (
    ModelArguments,
    RewardTrainer,
    build_reward_model_and_tokenizer,
    finish,
    peft_config,
    train,
)

EVAL_FILE = "reward_eval.json"


@dataclass
class RewardModelScriptArguments:
    """Where the preference pairs come from."""

    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Preference pairs: a `posttrain data preferences` output dir (train.jsonl, heldout.jsonl) "
                  "or any JSONL/Parquet/CSV file or datasets dir in a TRL preference layout (chosen/rejected, "
                  "explicit or implicit prompt)."},
    )
    eval_path: str | None = field(
        default=None, metadata={"help": "Held-out pairs; unset: the dir's heldout.jsonl, or eval_size rows."}
    )
    eval_size: int = field(
        default=200, metadata={"help": "Pairs held out of dataset_path when it has no held-out split (0: none)."}
    )
    preferences: str | None = field(  # or, in the YAML, the config's mapping: defaults skip argparse types
        default=None,
        metadata={"help": "Without dataset_path: sample the pairs first (main process; resumable, skipped when "
                  "complete) with a `posttrain data preferences` config, a YAML path or (in the YAML) its mapping "
                  "(output_dir, prompts, policy, sampling, verify, ...); training reads its output_dir."},
    )
    preferences_overrides: list[str] = field(
        default_factory=list, metadata={"help": "Dotted key=value overrides of `preferences`, e.g. sampling.n=8."}
    )
    policy_model: str | None = field(default=None, metadata={"help": "Overrides preferences.policy.model."})


def sample_pairs(script_args: RewardModelScriptArguments) -> str:
    """Run (or resume, or skip) the `preferences:` sampling on the main process first; returns its output dir."""
    from accelerate import PartialState

    overrides = list(script_args.preferences_overrides)
    if script_args.policy_model:
        overrides.append(f"policy.model={script_args.policy_model}")
    with option("--preferences"):
        config = load_preference_config(script_args.preferences, overrides)
    with PartialState().main_process_first():  # the others then find it complete
        run_preferences(config)
    return config.output_dir


def main(script_args: RewardModelScriptArguments, training_args: RewardConfig, model_args: ModelArguments) -> None:
    set_cpu_threads(model_args.cpu_threads)  # the policy's sampling runs first
    dataset_path = script_args.dataset_path
    if dataset_path is None and script_args.preferences is not None:
        dataset_path = sample_pairs(script_args)
    if dataset_path is None:
        raise UserError("--dataset_path is required: a `posttrain data preferences` dir or a preference file (or a "
                        "`preferences:` config to sample the pairs from a policy first)")
    with option("--dataset_path" if script_args.eval_path is None else "--dataset_path / --eval_path"):
        train_set, eval_set = load_preference_splits(dataset_path, script_args.eval_path,
                                                     script_args.eval_size, seed=training_args.seed)
    model, tokenizer = build_reward_model_and_tokenizer(model_args, seed=training_args.seed)
    trainer = RewardTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        # LoRA on a classifier: PEFT then trains the new score head in full
        peft_config=peft_config(replace(model_args, lora_task_type="SEQ_CLS")),
    )
    train(trainer, model_args)
    results = {}
    if eval_set is not None:
        results = trainer.evaluate()
        trainer.log_metrics("eval", results)
    finish(trainer, tokenizer, {EVAL_FILE: json.dumps({"pairs": len(eval_set) if eval_set else 0, **results},
                                                       indent=2)})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the pairs' sampling progress
    with exit_on_user_error("recipes/reward_model.py"):
        parser = TrlParser((RewardModelScriptArguments, RewardConfig, ModelArguments))
        main(*parse_config(parser.parse_args_and_config))
