"""The released layout (per-expert keys, MTP copies) loads into the fused in-memory model through load_state_dict."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from posttrain.model import load_model, save_model
from posttrain.model.layout import to_fused


def test_a_saved_checkpoint_loads_strictly_into_a_fresh_model(tmp_path):
    torch.manual_seed(0)
    trained = load_model("tiny")
    saved = load_file(save_model(trained, None, tmp_path / "ckpt") / "model.safetensors")
    assert any(".mlp.experts.0.gate_proj.weight" in k for k in saved)  # the released per-expert layout on disk
    torch.manual_seed(1)
    fresh = load_model("tiny")
    fresh.load_state_dict(saved, strict=True)  # experts fused, MTP copies dropped: every key matched
    for (name, a), (_, b) in zip(trained.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_the_models_own_state_dict_passes_through_unchanged():
    model = load_model("tiny")
    own = model.state_dict()
    assert all(to_fused(model, own)[k] is v for k, v in own.items())


def test_a_key_the_model_does_not_have_is_still_named_by_a_strict_load():
    model = load_model("tiny")
    with pytest.raises(RuntimeError, match="model.layers.1.mlp.not_a_weight"):
        model.load_state_dict({**model.state_dict(), "model.layers.1.mlp.not_a_weight": torch.zeros(1)})
