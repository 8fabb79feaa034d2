"""Shared fixtures: a saved random-init tiny checkpoint (with tokenizer), built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The local GSM8K test split (the repo sits beside `shared/` on the dev machines); override with POSTTRAIN_GSM8K.
GSM8K = Path(os.environ.get("POSTTRAIN_GSM8K", Path(__file__).resolve().parents[2] / "shared/data/gsm8k/test.jsonl"))
needs_gsm8k = pytest.mark.skipif(not GSM8K.is_file(), reason=f"no local GSM8K test split at {GSM8K} "
                                                            "(set POSTTRAIN_GSM8K)")

# Tests run on a couple of shared cores with tiny tensors: intra-op threads only spin-wait against each other
# there (a 3-4x slowdown measured on this machine), so one thread it is.
torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tiers: every test not marked `integration` or `slow` (doctests too) is a `unit` test."""
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in ("integration", "slow")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a random-init `tiny` checkpoint (seed 0) written by `posttrain.model.save_model`."""
    from posttrain.model import load_model, save_model
    from posttrain.tokenizer import build_tokenizer

    torch.manual_seed(0)
    return save_model(load_model("tiny"), build_tokenizer(), tmp_path_factory.mktemp("tiny") / "checkpoint")
