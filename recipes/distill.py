"""R1-style distillation: verified reasoning traces from a teacher, then SFT of the student on them.

    accelerate launch recipes/distill.py --config recipes/configs/tiny/distill.yaml [--key value ...]

Stage 1 (`data_tools.distill.run_distill`, the main process only): sample the teacher (`generation.teacher`) on
the prompts, verify with `rewards`, keep the readable verified samples, write `generation.output_dir/selected.jsonl`.
It resumes after a kill and is skipped when its output is complete (the COMPLETE marker), so rerunning is cheap.
Stage 2 (`recipes/sft.py`'s `main`, unchanged): SFT of the student (`model_name_or_path`) on those rows.

The YAML holds the generation config under `generation:` (the same file works for `posttrain distill generate`)
and any SFTConfig / ModelArguments key at the top level. Command-line overrides: any SFT key as `--key value`,
`--teacher_model PATH`, and `--generation_overrides sampling.n=8 selection.policy=all ...`.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTConfig, TrlParser

if __package__ in (None, ""):  # run as a script: the repository root must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_tools.distill import load_config, run_distill  # noqa: E402
from posttrain.cpu_threads import set_cpu_threads  # noqa: E402
from posttrain.training import ModelArguments  # noqa: E402


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


def _sft_module() -> Any:
    """`recipes/sft.py` as a module (recipes/ is not a package)."""
    if "posttrain_recipe_sft" in sys.modules:
        return sys.modules["posttrain_recipe_sft"]
    path = Path(__file__).resolve().parent / "sft.py"
    spec = importlib.util.spec_from_file_location("posttrain_recipe_sft", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def generate_traces(script_args: DistillScriptArguments):
    """Stage 1: run (or resume, or skip) the generation on the main process first; returns its `DistillResult`."""
    from accelerate import PartialState

    if script_args.generation is None:
        raise ValueError("--generation is required: put the distillation config under `generation:` in the YAML")
    overrides = list(script_args.generation_overrides)
    if script_args.teacher_model:
        overrides.append(f"teacher.model={script_args.teacher_model}")
    config = load_config(script_args.generation, overrides)
    with PartialState().main_process_first():  # the others then find it complete
        return run_distill(config)


def main(script_args: DistillScriptArguments, training_args: SFTConfig, model_args: ModelArguments) -> None:
    set_cpu_threads(model_args.cpu_threads)  # the teacher's generation runs first
    result = generate_traces(script_args)
    if script_args.dataset_path is None and result.stats["kept"] == 0:
        raise ValueError(f"no verified trace was kept (see {result.output_dir / 'stats.md'}); sample more (sampling.n, "
                         "more prompts) or use a stronger teacher")
    sft = _sft_module()
    dataset_path = script_args.dataset_path or str(result.data_path)
    sft.main(sft.SFTScriptArguments(dataset_path=dataset_path, eval_size=script_args.eval_size), training_args,
             model_args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # generation progress and acceptance
    parser = TrlParser((DistillScriptArguments, SFTConfig, ModelArguments))
    main(*parser.parse_args_and_config())
