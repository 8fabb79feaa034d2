"""Every shipped recipe config parses with its recipe's parser: no misspelt or stale keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from trl import GRPOConfig, RewardConfig, SFTConfig, TrlParser

from posttrain.app.pipeline import load_pipeline_config
from posttrain.training import ModelArguments
from tests.recipes.conftest import REPO, load_recipe

# GPU configs ask for bf16; parse them on this CPU machine with the device settings overridden.
CPU = ["--bf16", "false", "--use_cpu", "true"]
CONFIGS = sorted((REPO / "recipes" / "configs").glob("*/*.yaml"))


def parser_for(path: Path) -> TrlParser | None:
    if path.stem.startswith("sft"):
        return TrlParser((load_recipe("sft").SFTScriptArguments, SFTConfig, ModelArguments))
    if path.stem.startswith("grpo"):
        return TrlParser((load_recipe("grpo").GRPOScriptArguments, GRPOConfig, ModelArguments))
    if path.stem.startswith("reward_model"):
        return TrlParser((load_recipe("reward_model").RewardModelScriptArguments, RewardConfig, ModelArguments))
    return None


@pytest.mark.parametrize("path", [p for p in CONFIGS if parser_for(p)], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_config_parses(path: Path):
    parser_for(path).parse_args_and_config(["--config", str(path), *CPU])


def test_tiny_pipeline_config_names_existing_recipes_and_configs():
    config = load_pipeline_config(REPO / "recipes/configs/tiny/pipeline.yaml")
    for stage in config.stages:
        assert (REPO / stage.recipe).is_file() and (REPO / stage.config).is_file()
