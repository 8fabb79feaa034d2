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
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import trl
from accelerate.utils import DistributedType
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import ModelConfig, get_peft_config

from posttrain.cpu_threads import set_cpu_threads
from posttrain.errors import MissingFileError, UserError, option
from posttrain.files import write_atomic
from posttrain.model import (
    PRESETS, DeepseekV3MTPForCausalLM, add_training_callbacks, load_config, load_model, load_reward_model,
    load_tokenizer, save_model,
)
from posttrain.model.lora import EXPERT_PARAMETERS, MLA_MODULES, MLP_PARAMETERS
from posttrain.model.distributed import distributed_config, sharded_at_load
from posttrain.packing import use_row_packing
from posttrain.touchpoints import AlreadyTrained, StopWhenTrained
from posttrain.trainer_metrics import LogsCallbackMetrics

FINAL_DIR = "final"
COMPLETE = "checkpoint_complete.json"  # written last into a checkpoint-N by CompleteCheckpointCallback


@dataclass
class ModelArguments(ModelConfig):
    """TRL's `ModelConfig` (model path, dtype, its LoRA options) plus the DeepSeek-V3 extras; shared by every
    recipe. LoRA defaults to the MLA projections, dense MLPs and shared experts (`posttrain.model.lora`)."""

    model_name_or_path: str = field(
        default="tiny",
        metadata={"help": f"A checkpoint dir, a config.json, or a preset ({', '.join(PRESETS)}) for random init."},
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (PEFT needs 0 with target parameters)."})
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: list(MLA_MODULES), metadata={"help": "LoRA target modules (the MLA projections)."}
    )
    lora_target_parameters: list[str] | None = field(
        default_factory=lambda: list(MLP_PARAMETERS),
        metadata={"help": "LoRA target parameters: the dense MLPs' and shared experts' weights (PEFT would move "
                  "gate_proj/up_proj/down_proj module targets onto the routed experts, see posttrain.model.lora)."},
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
    ep_size: int = field(
        default=1,
        metadata={"help": "Expert parallelism: split each layer's routed experts (MTP's too) over this many processes, "
                  "with transformers' DistributedConfig and the model's own EP plan; launch with torchrun. The "
                  "Trainer then needs save_only_model (no resume); see docs/model.md."},
    )
    fsdp_size: int | None = field(
        default=None,
        metadata={"help": "With --ep_size: FSDP2-shard the model over this many processes at load (default: all of "
                  "them; must equal the number of processes and be a multiple of ep_size)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise UserError(f"--dtype {self.dtype!r}: choose float32, bfloat16 or float16")
        # ModelConfig options our model loading does not take: refuse them rather than ignore them
        for name, default in (("model_revision", "main"), ("attn_implementation", None), ("load_in_8bit", False),
                              ("load_in_4bit", False)):
            if getattr(self, name) != default:
                raise UserError(f"--{name} {getattr(self, name)!r}: not supported by posttrain's model loading; "
                                f"leave it at {default!r}")
        if self.mtp_loss_weight is not None and self.mtp_loss_weight < 0:
            raise UserError(f"--mtp_loss_weight must be >= 0, got {self.mtp_loss_weight}")
        threads = self.cpu_threads
        if threads is not None and threads != "auto" and not (str(threads).isdigit() and int(threads) >= 1):
            raise UserError(f"--cpu_threads {threads!r}: give a number of threads (>= 1) or 'auto'")
        if self.lora_routed_experts:
            self.lora_target_parameters = list(self.lora_target_parameters or []) + [
                p for p in EXPERT_PARAMETERS if p not in (self.lora_target_parameters or [])]
        if self.lora_target_parameters and self.lora_dropout != 0:
            raise UserError(f"--lora_dropout {self.lora_dropout}: PEFT's target_parameters (the MLPs' and experts' "
                            "weights) needs 0")


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
    sharding = distributed_config(args.ep_size, args.fsdp_size)
    with option("--model_name_or_path"):
        model = load_model(args.model_name_or_path, dtype=getattr(torch, args.dtype), distributed=sharding,
                           **overrides)
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
    with option("--model_name_or_path"):
        load_config(args.model_name_or_path)  # no such model: said before the tokenizer asks the hub for the name
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

    >>> peft_config(ModelArguments(use_peft=True, lora_routed_experts=True)).target_parameters[-2:]
    ['mlp.experts.gate_up_proj', 'mlp.experts.down_proj']
    """
    return get_peft_config(args)


def apply_lora(model: PreTrainedModel, args: ModelArguments) -> PeftModel:
    """Wrap `model` with the LoRA adapters `args` describe, as the trainers do; only the adapters train.

    >>> model = apply_lora(load_model("tiny"), ModelArguments(use_peft=True, lora_r=8))  # doctest: +SKIP
    """
    if not args.use_peft:
        raise ValueError("apply_lora needs ModelArguments(use_peft=True, ...)")
    return get_peft_model(model, peft_config(args))


class CompleteCheckpointCallback(TrainerCallback):
    """Mark each `checkpoint-N` complete once every process has written its part (weights, optimizer shards, RNG
    states, the trainer state) and the other callbacks have added theirs: `last_complete_checkpoint` resumes only
    from marked ones. Add it last (`attach` does)."""

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # rank 0 writes the trainer state before the others finish their shards
        if args.should_save:
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            for f in checkpoint.rglob("*"):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            write_atomic(checkpoint / COMPLETE, json.dumps({"global_step": state.global_step}) + "\n")


def attach(trainer: Trainer, args: ModelArguments) -> Trainer:
    """Add the MoE training callbacks (bias update, router/MTP metrics, checkpoint files) first and the
    checkpoint-complete marker last to a built HF/TRL trainer."""
    add_training_callbacks(trainer, gamma=args.bias_update_speed, log_expert_loads=args.log_expert_loads)
    trainer.add_callback(CompleteCheckpointCallback())
    return trainer


class SFTTrainer(LogsCallbackMetrics, trl.SFTTrainer):
    """TRL's `SFTTrainer`; its logs also carry the metrics of our callbacks (router, MTP, balance loss)."""


class GRPOTrainer(LogsCallbackMetrics, trl.GRPOTrainer):
    """TRL's `GRPOTrainer`; its logs also carry the metrics of our callbacks (router, MTP, reward failures)."""


class RewardTrainer(LogsCallbackMetrics, trl.RewardTrainer):
    """TRL's `RewardTrainer`; its logs also carry the metrics of our callbacks (router), and its `accuracy`,
    `margin` and `mean_reward` are means over the pairs since the last log. TRL's own average each batch's mean
    alike, so a short last eval batch (68 held-out pairs in batches of 64: 64 and 4) weighs as much as a full one.
    Batches are weighted by this process's pairs: accelerate evens the last batch out across processes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pairs: dict[str, list[int]] = {"train": [], "eval": []}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pairs = len(inputs["input_ids"]) // 2  # TRL's collator stacks the chosen, then the rejected
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._pairs["train" if self.model.training else "eval"].append(pairs)
        return result

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics, pairs = self._metrics[mode], self._pairs[mode]
        for key in ("accuracy", "margin", "mean_reward"):
            if pairs and len(metrics.get(key, ())) == len(pairs):
                metrics[key] = [sum(v * n for v, n in zip(metrics[key], pairs, strict=True)) / sum(pairs)]
        pairs.clear()
        super().log(logs, start_time)


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


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def _checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    root = Path(output_dir)
    found = root.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if root.is_dir() else []
    return sorted((p for p in found if p.name.split("-")[-1].isdigit()), key=_step)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` marked complete (`CompleteCheckpointCallback`), else None.

    `transformers.trainer_utils.get_last_checkpoint` returns the newest dir even if a kill cut its save short, and
    the trainer state the Trainer writes last comes from rank 0 alone, before the other ranks finish theirs.
    """
    done = [p for p in _checkpoints(output_dir) if (p / COMPLETE).is_file()]
    return str(done[-1]) if done else None


def resume_requested(resume_from_checkpoint: str | bool | None) -> bool:
    """Whether `--resume_from_checkpoint` asks to resume (a path, `true`/`last`), found or not."""
    return resume_from_checkpoint not in (None, False, "", "false", "False")


def resolve_resume(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """Map `--resume_from_checkpoint` (a path, `true`/`last`, or unset) to a checkpoint dir or None."""
    if not resume_requested(resume_from_checkpoint):
        return None
    if str(resume_from_checkpoint).lower() in ("true", "last"):
        return last_complete_checkpoint(output_dir)
    path = Path(str(resume_from_checkpoint))
    if not (path / TRAINER_STATE_NAME).is_file():
        raise MissingFileError(
            f"--resume_from_checkpoint {path}: not a complete checkpoint (no {TRAINER_STATE_NAME}); "
            f"give a checkpoint-N dir or 'true' for the newest complete one in {output_dir}"
        )
    return str(path)


def remove_torn(output_dir: str | os.PathLike, resume: str | None) -> list[Path]:
    """Delete what a kill left in `output_dir`: unmarked `checkpoint-N` dirs after the resume point (the run
    writes them again), temporary files and dirs of atomic writes (`.NAME.tmp-*`); a `final/` caught between its
    two renames is put back. Returns what was removed."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    after = _step(Path(resume)) if resume is not None else -1
    torn = [p for p in _checkpoints(root) if _step(p) > after and not (p / COMPLETE).is_file()]
    torn += [p for d in [root, *_checkpoints(root)] for p in d.glob(".*.tmp-*")]
    for old in root.glob(f".{FINAL_DIR}.old-*"):  # save_model renamed final/ away, then was killed
        if not (root / FINAL_DIR).exists():
            old.rename(root / FINAL_DIR)
        else:
            torn.append(old)
    for p in torn:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return torn


def train(trainer: Trainer, model_args: ModelArguments) -> None:
    """Add the MoE callbacks, keep packed batches as rows where attention needs it (`posttrain.packing`), and train,
    resuming from the newest complete checkpoint when asked (after removing what a kill left behind)."""
    args = trainer.args
    if sharded_at_load(trainer.model) and resume_requested(args.resume_from_checkpoint):
        raise UserError(
            f"--resume_from_checkpoint {args.resume_from_checkpoint} with --ep_size {model_args.ep_size}: a model "
            "sharded at load (transformers' DistributedConfig) cannot resume, the Trainer does not checkpoint its "
            "optimizer (hence --save_only_model). Start a new run from a checkpoint's weights with "
            "--model_name_or_path OUTPUT_DIR/checkpoint-N (optimizer and schedule start over), or train under "
            "accelerate's FSDP2 or ZeRO-3 (recipes/accelerate/), which resume exactly.")
    attach(trainer, model_args)
    use_row_packing(trainer)
    for core in trainer.model.modules():  # PEFT may have put adapters on the MTP layers
        if isinstance(core, DeepseekV3MTPForCausalLM):
            core.freeze_idle_mtp()
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    trainer.accelerator.wait_for_everyone()  # every rank has chosen before the main one deletes
    if resume is not None or str(args.resume_from_checkpoint).lower() in ("true", "last"):
        if trainer.accelerator.is_main_process:
            for p in remove_torn(args.output_dir, resume):
                trainer.accelerator.print(f"Removed {p} (left by an interrupted run)")
        trainer.accelerator.wait_for_everyone()
    trainer.add_callback(StopWhenTrained())
    try:
        trainer.train(resume_from_checkpoint=resume)
    except AlreadyTrained:  # the weights of the last checkpoint are loaded: the final save writes them
        trainer.accelerator.print(f"{resume} is the run's last step: nothing left to train")


def finish(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, extra_files: dict[str, str] | None = None) -> None:
    """Save `output_dir/final` atomically (with `extra_files`, name -> text), say where, and close the trainer's
    trackers and process group."""
    final = save_final(trainer, tokenizer, trainer.args.output_dir, extra_files)
    trainer.accelerator.print(f"Saved {final}")
    trainer.end()


def gathered_state_dict(trainer: Trainer) -> dict[str, torch.Tensor] | None:
    """The whole model's state dict where the engine shards it (ZeRO-3, FSDP), gathered by the engine's own
    consolidation onto the main process (CPU); None where every process holds the whole model (DDP, one process).
    Collective: call it on every process."""
    acc = trainer.accelerator
    if acc.distributed_type == DistributedType.DEEPSPEED and acc.deepspeed_config["zero_optimization"]["stage"] == 3:
        return acc.get_state_dict(trainer.model_wrapped)  # the DeepSpeed engine
    if acc.distributed_type == DistributedType.FSDP:
        return acc.get_state_dict(trainer.model)
    return None


def check_router_biases_agree(trainer: Trainer) -> None:
    """Raise unless every process holds the same routers' `e_score_correction_bias` (the bias update is applied on
    each process from all-reduced loads; the final save writes the main process's). Collective."""
    acc = trainer.accelerator
    biases = [b for name, b in trainer.model.named_buffers() if name.endswith("e_score_correction_bias")]
    if acc.num_processes == 1 or not biases:
        return
    flat = torch.cat([b.detach().float().flatten() for b in biases]).to(acc.device)
    every = acc.gather(flat[None])  # (processes, all biases)
    if not torch.equal(every.min(dim=0).values, every.max(dim=0).values):
        raise RuntimeError("the routers' e_score_correction_bias differ across processes: the bias update diverged")


def save_final(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, output_dir: str,
               extra_files: dict[str, str] | None = None) -> Path | None:
    """Write the trained model (LoRA merged) to `output_dir/final` atomically, `extra_files` (name -> text) in it:
    the weights are gathered on every process where an engine shards them, then written by the main process alone.
    """
    acc = trainer.accelerator
    acc.wait_for_everyone()
    check_router_biases_agree(trainer)
    if sharded_at_load(acc.unwrap_model(trainer.model)):  # expert parallel: save_model gathers on every process
        return save_model(acc.unwrap_model(trainer.model), tokenizer, Path(output_dir) / FINAL_DIR, extra_files)
    state_dict = gathered_state_dict(trainer)
    final = None
    if acc.is_main_process:
        final = save_model(acc.unwrap_model(trainer.model), tokenizer, Path(output_dir) / FINAL_DIR, extra_files,
                           state_dict=state_dict)
    acc.wait_for_everyone()
    return final

