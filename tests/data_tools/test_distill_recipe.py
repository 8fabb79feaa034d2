"""`recipes/distill.py` end to end on random-init tiny checkpoints: hf teacher generates and is verified, the
student is SFT'd on the kept rows, and a rerun skips the complete generation stage."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _recipe():
    spec = importlib.util.spec_from_file_location("posttrain_recipe_distill", ROOT / "recipes" / "distill.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: more threads only spin
    yield
    torch.set_num_threads(threads)


def test_recipe_generates_then_trains_the_student(tiny_checkpoint: Path, tmp_path: Path, one_thread) -> None:
    from trl import SFTConfig, TrlParser

    from posttrain.training import ModelArguments

    accept = tmp_path / "accept.py"  # a random-init teacher is never right: accept all to have rows to train on
    accept.write_text("def accept(prompts, completions, **columns):\n    return [1.0] * len(completions)\n")
    config = tmp_path / "distill.yaml"
    config.write_text(yaml.safe_dump({
        "generation": {
            "output_dir": str(tmp_path / "data"), "system_prompt": None,
            "prompts": [{"builtin": "arithmetic", "rows": 6}, {"builtin": "python_functions", "rows": 2}],
            "teacher": {"backend": "hf", "model": "set-on-the-command-line", "device": "cpu"},
            "sampling": {"n": 3, "temperature": 1.0, "max_new_tokens": 12},
            "verify": {"rewards": [f"{accept}:accept"]},
            "selection": {"policy": "all", "k": 2, "require_think": False, "max_foreign_script": 1.0,
                          "drop_truncated": False},
        },
        "model_name_or_path": str(tiny_checkpoint), "output_dir": str(tmp_path / "sft"), "use_cpu": True,
        "bf16": False, "gradient_checkpointing": False, "assistant_only_loss": True, "max_length": 64,
        "per_device_train_batch_size": 4, "max_steps": 2, "save_strategy": "no", "report_to": [],
        "logging_steps": 1, "mtp_loss_weight": 0.1,
    }))
    recipe = _recipe()
    parser = TrlParser((recipe.DistillScriptArguments, SFTConfig, ModelArguments))
    argv = ["--config", str(config), "--teacher_model", str(tiny_checkpoint), "--generation_overrides", "sampling.seed=1"]
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    recipe.main(script_args, training_args, model_args)

    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["samples"] == 24 and stats["kept"] > 0 and stats["sampling"]["seed"] == 1
    assert (tmp_path / "sft" / "final" / "config.json").is_file()
    assert recipe.generate_traces(script_args).skipped  # complete: the rerun does not generate again
