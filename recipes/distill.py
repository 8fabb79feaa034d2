"""R1-style distillation: verified reasoning traces from a teacher, then SFT of the student on them.

    accelerate launch recipes/distill.py --config recipes/configs/tiny/distill.yaml [--key value ...]

Stage 1 (`data_tools.distill.run_distill`, the main process only): sample the teacher (`generation.teacher`) on
the prompts, verify with `rewards`, keep the readable verified samples, write `generation.output_dir/selected.jsonl`.
It resumes after a kill and is skipped when its output is complete (the COMPLETE marker), so rerunning is cheap.
Stage 2 (`posttrain.training.train_sft`, as `recipes/sft.py` runs it): SFT of the student (`model_name_or_path`)
on those rows.

The YAML holds the generation config under `generation:` (the same file works for `posttrain distill generate`)
and any SFTConfig / ModelArguments key at the top level. Command-line overrides: any SFT key as `--key value`,
`--teacher_model PATH`, and `--generation_overrides sampling.n=8 selection.policy=all ...`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig, TrlParser

from data_tools import load_sft_dataset
from data_tools.distill import load_distill_config, run_distill
from posttrain.cpu_threads import set_cpu_threads
from posttrain.errors import UserError, exit_on_user_error, option, parse_config
from posttrain.training import ModelArguments, build_model_and_tokenizer, train_sft


@dataclass
class DistillScriptArguments:
    """The generation stage, and what the SFT stage trains on."""

    generation: dict[str, Any] | None = field(  # a YAML mapping: defaults skip argparse types
        default=None,
        metadata={"help": "The distillation config (output_dir, prompts, teacher, sampling, verify, selection, ...); "
                  "see docs/distill.md."},
    )
    generation_overrides: list[str] = field(
        default_factory=list, metadata={"help": "Dotted key=value overrides of `generation`, e.g. sampling.n=8."}
    )
    teacher_model: str | None = field(default=None, metadata={"help": "Overrides generation.teacher.model."})
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "What the student trains on; default the generated selected.jsonl. A mix spec YAML here "
                  "mixes the distilled rows with other sources."},
    )
    eval_size: int = field(default=0, metadata={"help": "Rows held out for the eval loss (0: none)."})


def generate_traces(script_args: DistillScriptArguments):
    """Stage 1: run (or resume, or skip) the generation on the main process first; returns its `DistillResult`."""
    from accelerate import PartialState

    if script_args.generation is None:
        raise UserError("--generation is required: put the distillation config under `generation:` in the YAML")
    overrides = list(script_args.generation_overrides)
    if script_args.teacher_model:
        overrides.append(f"teacher.model={script_args.teacher_model}")
    with option("--generation"):
        config = load_distill_config(script_args.generation, overrides)
    with PartialState().main_process_first():  # the others then find it complete
        return run_distill(config)


def main(script_args: DistillScriptArguments, training_args: SFTConfig, model_args: ModelArguments) -> None:
    set_cpu_threads(model_args.cpu_threads)  # the teacher's generation runs first
    result = generate_traces(script_args)
    if script_args.dataset_path is None and result.stats["kept"] == 0:
        raise UserError(f"no verified trace was kept (see {result.output_dir / 'stats.md'}); sample more (sampling.n, "
                        "more prompts) or use a stronger teacher")
    model, tokenizer = build_model_and_tokenizer(model_args, seed=training_args.seed)
    with option("--dataset_path"):
        dataset = load_sft_dataset(script_args.dataset_path or str(result.data_path),
                                   workdir=f"{training_args.output_dir}/data")
    train_sft(model, tokenizer, dataset, training_args, model_args, eval_size=script_args.eval_size)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # generation progress and acceptance
    with exit_on_user_error("recipes/distill.py"):
        parser = TrlParser((DistillScriptArguments, SFTConfig, ModelArguments))
        main(*parse_config(parser.parse_args_and_config))
