"""A training run of tiny checkpoints for the eval tests, from the shared `tiny_checkpoint` fixture."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_run(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding `checkpoint-1` and `checkpoint-2` (copies of the random-init tiny checkpoint)."""
    run = tmp_path_factory.mktemp("run")
    for step in (1, 2):
        shutil.copytree(tiny_checkpoint, run / f"checkpoint-{step}")
    return run
