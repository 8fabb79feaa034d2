"""Glue the recipes share: model arguments, building the model and tokenizer, callbacks, resume, final save.

Every recipe (`recipes/sft.py`, `recipes/grpo.py`, `recipes/distill.py`) parses a `ModelArguments` next to TRL's
own config, so the same YAML keys mean the same thing in every stage:

>>> args = ModelArguments(model_name_or_path="tiny", mtp_loss_weight=0.0)
>>> model, tokenizer = build_model_and_tokenizer(args)
>>> model.mtp_loss_weight
0.0
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import trl
from transformers import PreTrainedTokenizerBase, Trainer, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import ModelConfig, get_peft_config

from posttrain.cpu_threads import set_cpu_threads
from posttrain.model import PRESETS, add_training_callbacks, load_model, load_reward_model, load_tokenizer, save_model
from posttrain.model.lora import EXPERT_PARAMETERS, MLA_MODULES, MLP_MODULES
from posttrain.packing import use_row_packing
from posttrain.trainer_metrics import LogsCallbackMetrics

FINAL_DIR = "final"


@dataclass
class ModelArguments(ModelConfig):
    """TRL's `ModelConfig` (model path, dtype, its LoRA options) plus the DeepSeek-V3 extras; shared by every
    recipe. LoRA defaults to the MLA projections, dense MLPs and shared experts (`posttrain.model.lora`)."""

    model_name_or_path: str = field(
        default="tiny",
        metadata={"help": f"A checkpoint dir, a config.json, or a preset ({', '.join(PRESETS)}) for random init."},
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (0 with lora_routed_experts)."})
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: MLA_MODULES + MLP_MODULES, metadata={"help": "LoRA target modules."}
    )
    lora_routed_experts: bool = field(
        default=False, metadata={"help": "Also put LoRA on the fused routed-expert tensors (PEFT target_parameters)."}
    )
    mtp_loss_weight: float | None = field(
        default=None,
        metadata={"help": "lambda of the MTP loss (report: 0.3, then 0.1); 0 turns MTP training off. None: keep "
                  "the model's own."},
    )
    seq_balance_alpha: float = field(
        default=0.0, metadata={"help": "alpha of the sequence-wise balance loss (report eq. 17); 0 turns it off."}
    )
    bias_update_speed: float = field(
        default=1e-3,
        metadata={"help": "gamma of the auxiliary-loss-free bias update after each optimizer step; 0 freezes it."},
    )
    log_expert_loads: bool = field(
        default=False, metadata={"help": "Log every layer's per-expert load (layers x experts scalars)."}
    )
    speculative_generation: bool = field(
        default=False,
        metadata={"help": "Decode with the MTP module's drafts in `model.generate` (GRPO rollouts without vLLM): "
                  "same tokens greedy, same distribution sampled; `mtp/acceptance` is logged."},
    )
    cpu_threads: str | None = field(
        default=None,
        metadata={"help": "torch threads per process: a number, 'auto' (this machine's cores shared among the local "
                  "processes), or unset to keep the launcher's OMP_NUM_THREADS (`accelerate launch` sets 1 unless "
                  "given --num_cpu_threads_per_process or --cpu)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype {self.dtype!r}: choose float32, bfloat16 or float16")
        # ModelConfig options our model loading does not take: refuse them rather than ignore them
        for name, default in (("model_revision", "main"), ("attn_implementation", None), ("load_in_8bit", False),
                              ("load_in_4bit", False)):
            if getattr(self, name) != default:
                raise ValueError(f"--{name} {getattr(self, name)!r}: not supported by posttrain's model loading; "
                                 f"leave it at {default!r}")
        if self.mtp_loss_weight is not None and self.mtp_loss_weight < 0:
            raise ValueError(f"--mtp_loss_weight must be >= 0, got {self.mtp_loss_weight}")
        threads = self.cpu_threads
        if threads is not None and threads != "auto" and not (str(threads).isdigit() and int(threads) >= 1):
            raise ValueError(f"--cpu_threads {threads!r}: give a number of threads (>= 1) or 'auto'")
        if self.lora_routed_experts:
            if self.lora_dropout != 0:
                raise ValueError(f"--lora_dropout {self.lora_dropout}: PEFT's target_parameters (routed experts) "
                                 "needs 0")
            self.lora_target_parameters = self.lora_target_parameters or list(EXPERT_PARAMETERS)


def build_model_and_tokenizer(args: ModelArguments, seed: int | None = None):
    """Load (or random-init) our DeepSeek-V3 model and its tokenizer, with the extras set from `args`.

    `seed` (the recipe's training seed) seeds torch first, so a random init from a preset repeats from run to run;
    the Trainer seeds only after the model is built.
    """
    set_cpu_threads(args.cpu_threads)
    if seed is not None:
        set_seed(seed)
    overrides = {"seq_balance_alpha": args.seq_balance_alpha}
    if args.mtp_loss_weight is not None:
        overrides["mtp_loss_weight"] = args.mtp_loss_weight
    model = load_model(args.model_name_or_path, dtype=getattr(torch, args.dtype), **overrides)
    tokenizer = load_tokenizer(args.model_name_or_path)
    model.speculative_generation = args.speculative_generation
    # Random init from a preset: the special tokens must match the offline tokenizer's.
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(model.config, name) is None or args.model_name_or_path in PRESETS:
            setattr(model.config, name, getattr(tokenizer, name))
            setattr(model.generation_config, name, getattr(tokenizer, name))
    return model, tokenizer


def build_reward_model_and_tokenizer(args: ModelArguments, seed: int | None = None):
    """A one-output `DeepseekV3ForSequenceClassification` (`load_reward_model`) over the backbone of
    `args.model_name_or_path` (an SFT checkpoint, or a preset for random init), and its tokenizer; the score head is
    seeded by `seed`. The MTP and sequence-wise balance options do not apply (no LM loss); the bias update does."""
    set_cpu_threads(args.cpu_threads)
    if seed is not None:
        set_seed(seed)
    tokenizer = load_tokenizer(args.model_name_or_path)
    model = load_reward_model(args.model_name_or_path, dtype=getattr(torch, args.dtype),
                              pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


def training_columns(dataset, tokenizer: PreTrainedTokenizerBase, assistant_only_loss: bool) -> list[str]:
    """The columns SFT trains on: the mix's own token ids when they are this tokenizer's, else `messages`.

    The mix builder tokenizes once with its target tokenizer, so SFTTrainer need not; its `assistant_masks`
    column then carries assistant-only loss. A mix built with another tokenizer falls back to the conversations,
    which SFTTrainer tokenizes itself.
    """
    if not {"input_ids", "assistant_masks"} <= set(dataset.column_names):
        return ["messages"]
    row = dataset[0]
    ours = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
    if list(ours) != list(row["input_ids"]):
        return ["messages"]
    return ["input_ids", "assistant_masks"] if assistant_only_loss else ["input_ids"]


def peft_config(args: ModelArguments):
    """The PEFT LoRA config for `args` (TRL's `get_peft_config`), or None for full fine-tuning.

    >>> peft_config(ModelArguments(use_peft=True, lora_routed_experts=True)).target_parameters
    ['mlp.experts.gate_up_proj', 'mlp.experts.down_proj']
    """
    return get_peft_config(args)


def attach(trainer: Trainer, args: ModelArguments) -> Trainer:
    """Add the MoE training callback (bias update, router/MTP metrics) to a built HF/TRL trainer."""
    add_training_callbacks(trainer, gamma=args.bias_update_speed, log_expert_loads=args.log_expert_loads)
    return trainer


class SFTTrainer(LogsCallbackMetrics, trl.SFTTrainer):
    """TRL's `SFTTrainer`; its logs also carry the metrics of our callbacks (router, MTP, balance loss)."""


class GRPOTrainer(LogsCallbackMetrics, trl.GRPOTrainer):
    """TRL's `GRPOTrainer`; its logs also carry the metrics of our callbacks (router, MTP, reward failures)."""


class RewardTrainer(LogsCallbackMetrics, trl.RewardTrainer):
    """TRL's `RewardTrainer`; its logs also carry the metrics of our callbacks (router)."""


def train_sft(model, tokenizer: PreTrainedTokenizerBase, dataset, training_args, model_args: ModelArguments,
              eval_size: int = 0) -> None:
    """SFT with TRL's `SFTTrainer` on `dataset` (a built mix or conversations), as the SFT and distillation recipes
    run it: the columns of `training_columns`, `eval_size` rows held out for the eval loss, then `train` and
    `finish`.

    A pre-tokenized mix trains with a copy of `training_args` whose `assistant_only_loss` is off: TRL refuses that
    flag on token ids and applies the `assistant_masks` column itself. The parsed arguments stay as they were.
    """
    columns = training_columns(dataset, tokenizer, training_args.assistant_only_loss)
    dataset = dataset.select_columns(columns)
    if "messages" not in columns:
        training_args = copy.copy(training_args)
        training_args.assistant_only_loss = False
    eval_dataset = None
    if eval_size > 0:
        split = dataset.train_test_split(test_size=eval_size, seed=training_args.seed)
        dataset, eval_dataset = split["train"], split["test"]
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config(model_args),
    )
    train(trainer, model_args)
    finish(trainer, tokenizer)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` whose trainer state was written (the Trainer writes it last), else None.

    `transformers.trainer_utils.get_last_checkpoint` returns the newest dir even if a kill cut its save short;
    resuming from that one fails, so we skip it.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    done = [
        p for p in root.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if p.name.split("-")[-1].isdigit() and (p / TRAINER_STATE_NAME).is_file()
    ]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def resolve_resume(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """Map `--resume_from_checkpoint` (a path, `true`/`last`, or unset) to a checkpoint dir or None."""
    if resume_from_checkpoint in (None, False, "", "false", "False"):
        return None
    if str(resume_from_checkpoint).lower() in ("true", "last"):
        return last_complete_checkpoint(output_dir)
    path = Path(str(resume_from_checkpoint))
    if not (path / TRAINER_STATE_NAME).is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {path}: not a complete checkpoint (no {TRAINER_STATE_NAME}); "
            f"give a checkpoint-N dir or 'true' for the newest complete one in {output_dir}"
        )
    return str(path)


def train(trainer: Trainer, model_args: ModelArguments) -> None:
    """Add the MoE callback, keep packed batches as rows where attention needs it (`posttrain.packing`), and train,
    resuming from the newest complete checkpoint when asked."""
    attach(trainer, model_args)
    use_row_packing(trainer)
    args = trainer.args
    trainer.train(resume_from_checkpoint=resolve_resume(args.resume_from_checkpoint, args.output_dir))


def finish(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, extra_files: dict[str, str] | None = None) -> None:
    """Save `output_dir/final` atomically (with `extra_files`, name -> text), say where, and close the trainer's
    trackers and process group."""
    final = save_final(trainer, tokenizer, trainer.args.output_dir, extra_files)
    trainer.accelerator.print(f"Saved {final}")
    trainer.end()


def save_final(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, output_dir: str,
               extra_files: dict[str, str] | None = None) -> Path | None:
    """Write the trained model (LoRA merged) to `output_dir/final` atomically, from the main process only."""
    trainer.accelerator.wait_for_everyone()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not trainer.accelerator.is_main_process:
        return None
    return save_model(model, tokenizer, Path(output_dir) / FINAL_DIR, extra_files)
