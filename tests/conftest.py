"""Shared fixtures: a saved random-init tiny checkpoint (with tokenizer), built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tests run on a couple of shared cores with tiny tensors: intra-op threads only spin-wait against each other
# there (a 3-4x slowdown measured on this machine), so one thread it is.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a random-init `tiny` checkpoint (seed 0) written by `posttrain.model.save_model`."""
    from posttrain.model import load_model, save_model
    from posttrain.tokenizer import build_tokenizer

    torch.manual_seed(0)
    return save_model(load_model("tiny"), build_tokenizer(), tmp_path_factory.mktemp("tiny") / "checkpoint")
