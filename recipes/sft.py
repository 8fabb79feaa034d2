"""SFT of a DeepSeek-V3-architecture model on an instruction mix.

    accelerate launch recipes/sft.py --config recipes/configs/tiny/sft.yaml [--key value ...]

TRL's `SFTTrainer` trains (assistant-only loss, padding-free packing, LoRA through PEFT, checkpoints, eval). This
script adds the mix (built once by `data_tools` from a YAML spec, or read from a built dir), the model's MTP loss
and sequence-wise balance loss, the auxiliary-loss-free bias update with router metrics, resuming only from
complete checkpoints, and an atomic final checkpoint in `output_dir/final` that plain transformers loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig, TrlParser

from data_tools import load_sft_dataset
from posttrain.errors import UserError, exit_on_user_error, option, parse_config
from posttrain.training import ModelArguments, build_model_and_tokenizer, train_sft


@dataclass
class SFTScriptArguments:
    """Where the training conversations come from."""

    dataset_path: str | None = field(
        default=None,
        metadata={"help": "A mix spec YAML (built once into <output_dir>/data), a built mix dir, or any dataset the "
                  "mix builder reads (JSONL/Parquet/CSV, datasets dir)."},
    )
    eval_size: int = field(default=200, metadata={"help": "Rows held out of the mix for the eval loss (0: none)."})


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelArguments) -> None:
    if script_args.dataset_path is None:
        raise UserError("--dataset_path is required: a mix spec YAML, a built mix dir, or a JSONL/Parquet/CSV file")
    model, tokenizer = build_model_and_tokenizer(model_args, seed=training_args.seed)
    with training_args.main_process_first(desc="SFT data"):  # the main process builds a mix; the others load it
        with option("--dataset_path"):
            dataset = load_sft_dataset(script_args.dataset_path, workdir=f"{training_args.output_dir}/data")
    train_sft(model, tokenizer, dataset, training_args, model_args, eval_size=script_args.eval_size)


if __name__ == "__main__":
    with exit_on_user_error("recipes/sft.py"):
        parser = TrlParser((SFTScriptArguments, SFTConfig, ModelArguments))
        main(*parse_config(parser.parse_args_and_config))
