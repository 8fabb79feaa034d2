"""Parameter and KV-cache figures of the presets and the released DeepSeek-V3 config."""

from __future__ import annotations

import pytest

from posttrain.model import load_config
from posttrain.model.info import model_info


def test_deepseek_v3_matches_published_figures():
    info = model_info(load_config("deepseek-v3"))
    assert round(info["total_params"] / 1e9) == 671
    assert 36.5e9 < info["activated_params"] < 38e9  # "37B activated"
    assert 13e9 < info["mtp_params"] < 14.5e9  # "14B" (685B = 671B + 14B on the Hub)
    assert info["kv_cache_bytes_per_token"] == 61 * (512 + 64) * 2
    assert info["mha_kv_cache_bytes_per_token"] == 61 * 128 * (192 + 128) * 2


@pytest.mark.parametrize("preset, low, high", [("tiny", 2e6, 4e6), ("small", 100e6, 300e6)])
def test_presets_have_their_intended_size(preset, low, high):
    assert low <= model_info(load_config(preset))["total_params"] <= high


def test_tiny_has_every_deepseek_v3_feature():
    c = load_config("tiny")
    assert c.num_hidden_layers - c.first_k_dense_replace >= 2 and c.n_routed_experts >= 8
    assert c.n_shared_experts >= 1 and c.n_group >= 2 and c.num_nextn_predict_layers == 1
