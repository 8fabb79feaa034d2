"""MTP refresh: after RL, retrain only the MTP module on the policy's own samples so its drafts match again.

    accelerate launch recipes/mtp_refresh.py --config recipes/configs/tiny/mtp_refresh.yaml \
        --model_name_or_path outputs/tiny/grpo_from_sft/final [--key value ...]

RL moves the main model; the MTP module (not trained in RL) keeps drafting for the old policy and its acceptance,
so the serving speed-up, decays. This stage:

1. Samples completions from the policy itself (`posttrain.generation.generate`) for builtin prompts or the prompts of
   `dataset_path` (or, with `regenerate: false`, takes `dataset_path`'s conversations as they are), once, into
   `<output_dir>/samples.jsonl` (written by the main process, atomically; a resumed run reuses it).
2. Trains with TRL's `SFTTrainer`, every non-MTP parameter frozen (`requires_grad=False`). The trainer still
   computes the main cross-entropy, but nothing it could move is trainable: the only gradient is the MTP loss's
   (the model adds it at the backbone output, see `posttrain.model.modeling`), so the main model leaves this stage
   bit for bit as it came and the cost is one frozen forward plus the MTP block's backward. The router bias update
   is off (it would change the main model's routing).
3. Measures the depth-1 acceptance (`posttrain.model.acceptance`) on held-out samples before and after, writes
   `<output_dir>/mtp_acceptance.json`, and saves `<output_dir>/final` atomically with `save_final`.

Pipeline stage: `{name: mtp_refresh, recipe: recipes/mtp_refresh.py, config: recipes/configs/tiny/mtp_refresh.yaml,
args: {model_name_or_path: "{grpo}"}}`; it accepts the engine's `--output_dir`, `--model_name_or_path` and
`--resume_from_checkpoint true`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, TrlParser

from data_tools import load_prompts, read_source
from posttrain.errors import UserError, exit_on_user_error, option, parse_config
from posttrain.files import read_jsonl, write_atomic
from posttrain.generation import own_completions
from posttrain.model.acceptance import acceptance_on_rows, tokenize_conversations
from posttrain.model.mtp import mtp_layers
from posttrain.training import ModelArguments, SFTTrainer, build_model_and_tokenizer, finish, train

SAMPLES_FILE = "samples.jsonl"


@dataclass
class MTPRefreshArguments:
    """Where the policy's samples come from."""

    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Prompts (any dataset the mix builder reads; the first user turn is the prompt) to sample "
                  "the policy on, or with --regenerate false conversations to train on as they are. Unset: the "
                  "builtin tasks below."},
    )
    regenerate: bool = field(
        default=True, metadata={"help": "Sample completions from the policy (true) or use dataset_path's as given."}
    )
    tasks: list[str] = field(default_factory=lambda: ["arithmetic"], metadata={"help": "Builtin tasks for prompts."})
    num_prompts: int = field(
        default=1000, metadata={"help": "Builtin prompts per task (train split); with dataset_path, its first N."}
    )
    prompts_seed: int = field(default=0, metadata={"help": "Seed of the builtin prompts."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0: greedy) of the policy."})
    max_new_tokens: int = field(default=192, metadata={"help": "Longest sampled completion, in tokens."})
    generation_batch_size: int = field(default=64, metadata={"help": "Prompts per generation batch."})
    eval_size: int = field(
        default=100, metadata={"help": "Samples held out to measure acceptance before and after (0: no measurement)."}
    )

    def __post_init__(self) -> None:
        if not self.regenerate and self.dataset_path is None:
            raise UserError("--regenerate false trains on dataset_path's conversations: give --dataset_path")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {self.temperature}")


def policy_samples(args: MTPRefreshArguments, model, tokenizer, seed: int) -> list[dict]:
    """Conversations `[user, assistant]` whose answers the policy itself wrote (or the dataset's, as given)."""
    with option("--dataset_path" if args.dataset_path else "--tasks"):
        if not args.regenerate:
            rows = read_source({"path": args.dataset_path, "domain": "unknown"})
            return [{"messages": m} for m in rows["messages"]]
        prompts = load_prompts(args.dataset_path, tasks=args.tasks, n=args.num_prompts, seed=args.prompts_seed,
                               split="train")
    if args.dataset_path is not None:
        prompts = prompts.select(range(min(args.num_prompts, prompts.num_rows)))
    answered = own_completions(model, tokenizer, prompts["prompt"], max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, batch_size=args.generation_batch_size, seed=seed,
                               desc="policy samples")
    return [{"messages": m} for m in answered]


def load_or_sample(args: MTPRefreshArguments, training_args: SFTConfig, model, tokenizer) -> list[dict]:
    """The samples file in output_dir: written once by the main process (atomically), read by every process."""
    path = Path(training_args.output_dir) / SAMPLES_FILE
    with training_args.main_process_first(desc="policy samples"):
        if not path.is_file():
            rows = policy_samples(args, model, tokenizer, training_args.seed)
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return [row for _, row in read_jsonl(path)]


def freeze_all_but_mtp(model) -> int:
    """requires_grad only on the MTP layers; returns their parameter count."""
    layers = mtp_layers(model)
    if not layers:
        raise UserError("--model_name_or_path has no MTP module (num_nextn_predict_layers = 0): nothing to refresh")
    model.requires_grad_(False)
    for layer in layers:
        layer.requires_grad_(True)
    return sum(p.numel() for layer in layers for p in layer.parameters())


def measure(model, tokenizer, rows: list[dict]) -> float:
    """Depth-1 acceptance on the completions of `rows` (see posttrain.model.acceptance)."""
    tokenized = tokenize_conversations(tokenizer, [r["messages"] for r in rows])
    was_training = model.training
    model.eval()
    result = acceptance_on_rows(model, tokenized, pad_token_id=tokenizer.pad_token_id or 0)
    model.train(was_training)
    return result.acceptance


@dataclass
class MTPRefreshModelArguments(ModelArguments):
    """`ModelArguments` with the refresh's own default: no router bias update (the main model must not move)."""

    bias_update_speed: float = field(
        default=0.0, metadata={"help": "Must stay 0: the refresh leaves the main model's routing as it came."}
    )


def main(script_args: MTPRefreshArguments, training_args: SFTConfig, model_args: MTPRefreshModelArguments) -> None:
    if model_args.mtp_loss_weight is None or model_args.mtp_loss_weight <= 0:
        raise UserError("--mtp_loss_weight must be > 0 for an MTP refresh (it is the only loss; e.g. 1.0)")
    if model_args.use_peft:
        raise UserError("--use_peft: the refresh trains the MTP module's own weights; run it without LoRA")
    if model_args.bias_update_speed != 0:
        raise UserError("--bias_update_speed must be 0 for an MTP refresh: the main model's routing must not move")
    model, tokenizer = build_model_and_tokenizer(model_args, seed=training_args.seed)
    trainable = freeze_all_but_mtp(model)
    rows = load_or_sample(script_args, training_args, model, tokenizer)
    held_out = rows[: script_args.eval_size]
    train_rows = rows[script_args.eval_size :] or rows
    before = measure(model, tokenizer, held_out) if held_out else float("nan")

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tokenizer,
    )
    trainer.accelerator.print(f"MTP refresh: {trainable:,} trainable parameters (MTP only), {len(train_rows)} samples")
    train(trainer, model_args)
    after = measure(trainer.accelerator.unwrap_model(trainer.model), tokenizer, held_out) if held_out else float("nan")
    if trainer.accelerator.is_main_process:
        report = {"acceptance_before": before, "acceptance_after": after, "held_out": len(held_out)}
        write_atomic(Path(training_args.output_dir) / "mtp_acceptance.json", json.dumps(report, indent=2) + "\n")
        trainer.accelerator.print(f"MTP acceptance on held-out policy samples: {before:.4f} -> {after:.4f}")
    finish(trainer, tokenizer)


if __name__ == "__main__":
    with exit_on_user_error("recipes/mtp_refresh.py"):
        parser = TrlParser((MTPRefreshArguments, SFTConfig, MTPRefreshModelArguments))
        main(*parse_config(parser.parse_args_and_config))
