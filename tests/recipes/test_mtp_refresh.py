"""recipes/mtp_refresh.py: only the MTP module moves, the samples are the policy's own, acceptance is reported."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from .conftest import launch, load_recipe

pytestmark = pytest.mark.integration


def _weights(checkpoint):
    out = {}
    for f in sorted(checkpoint.glob("model*.safetensors")):
        out |= load_file(str(f))
    return out


def test_refresh_trains_only_mtp(tiny_checkpoint, tmp_path):
    out = tmp_path / "refresh"
    launch("mtp_refresh", "--config", "recipes/configs/tiny/mtp_refresh.yaml",
           "--model_name_or_path", str(tiny_checkpoint), "--output_dir", str(out),
           "--num_prompts", "12", "--eval_size", "4", "--max_new_tokens", "12", "--max_steps", "3",
           "--save_steps", "3", "--report_to", "none", "--resume_from_checkpoint", "true", processes=1)
    before, after = _weights(tiny_checkpoint), _weights(out / "final")
    assert before.keys() == after.keys()
    n = json.loads((tiny_checkpoint / "config.json").read_text())["num_hidden_layers"]
    mtp = [k for k in before if k.startswith(f"model.layers.{n}.") and "shared_head.head" not in k
           and "embed_tokens" not in k]
    main = [k for k in before if k not in mtp]
    assert all(torch.equal(before[k], after[k]) for k in main)  # router biases too
    assert any(not torch.equal(before[k], after[k]) for k in mtp)
    samples = (out / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 12 and json.loads(samples[0])["messages"][-1]["role"] == "assistant"
    report = json.loads((out / "mtp_acceptance.json").read_text())
    assert report["held_out"] == 4 and 0 <= report["acceptance_after"] <= 1


def test_refresh_refuses_zero_mtp_weight():
    recipe = load_recipe("mtp_refresh")
    from trl import SFTConfig

    from posttrain.training import ModelArguments

    with pytest.raises(ValueError, match="mtp_loss_weight must be > 0"):
        recipe.main(recipe.MTPRefreshArguments(), SFTConfig(output_dir="/tmp/unused", use_cpu=True),
                    ModelArguments(mtp_loss_weight=0.0))
    with pytest.raises(ValueError, match="give --dataset_path"):
        recipe.MTPRefreshArguments(regenerate=False)
