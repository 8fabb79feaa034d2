"""Tiny random-init DeepSeek-V3 checkpoints for the eval tests (seconds to build, nonsense to read)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from posttrain.model.presets import PRESETS
from posttrain.tokenizer import build_tokenizer


def _save_tiny(path: Path, seed: int) -> Path:
    tokenizer = build_tokenizer()
    config = transformers.DeepseekV3Config(
        **PRESETS["tiny"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training run directory holding `checkpoint-1` and `checkpoint-2` (two different random inits)."""
    run = tmp_path_factory.mktemp("run")
    for step in (1, 2):
        _save_tiny(run / f"checkpoint-{step}", seed=step)
    return run
