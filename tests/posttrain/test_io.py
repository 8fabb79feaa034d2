"""Checkpoints: HF layout, MTP under the released names, round trips, atomic writes, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.model import load_model, load_tokenizer, save_model
from posttrain.model.io import MTP_COPIES_FILE, add_mtp_copies
from posttrain.model.presets import PRESETS
from posttrain.tokenizer import build_tokenizer

N = PRESETS["tiny"]["num_hidden_layers"]


def _keys(ckpt) -> set[str]:
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    return set(index["weight_map"])


def test_checkpoint_is_plain_hf_with_mtp_under_released_names(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["model_type"] == "deepseek_v3" and config["architectures"] == ["DeepseekV3ForCausalLM"]
    keys = _keys(tiny_checkpoint)
    for name in ("enorm", "hnorm", "eh_proj", "shared_head.norm", "shared_head.head", "embed_tokens",
                 "self_attn.kv_a_proj_with_mqa", "mlp.gate", "mlp.experts.0.gate_proj", "input_layernorm"):
        assert f"model.layers.{N}.{name}.weight" in keys, name
    assert f"model.layers.{N}.mlp.gate.e_score_correction_bias" in keys
    assert AutoTokenizer.from_pretrained(tiny_checkpoint).chat_template


def test_mtp_copies_are_added_to_a_plain_save_once(tmp_path):
    model = load_model("tiny")
    model.save_pretrained(tmp_path)  # what the Trainer writes as checkpoint-N: no copies, no index
    assert add_mtp_copies(tmp_path)
    assert f"model.layers.{N}.shared_head.head.weight" in _keys(tmp_path)
    with safe_open(str(tmp_path / MTP_COPIES_FILE), "pt") as f:
        assert torch.equal(f.get_tensor(f"model.layers.{N}.embed_tokens.weight"), model.model.embed_tokens.weight)
        assert torch.equal(f.get_tensor(f"model.layers.{N}.shared_head.head.weight"), model.lm_head.weight)
    assert not add_mtp_copies(tmp_path)  # already there
    assert not list(tmp_path.glob(".*tmp*"))
    assert torch.equal(load_model(tmp_path).lm_head.weight, model.lm_head.weight)


def test_mtp_copies_skip_checkpoints_without_full_weights(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    assert not add_mtp_copies(tmp_path)
    assert not (tmp_path / MTP_COPIES_FILE).exists()


def test_round_trip_ours_is_exact_including_mtp_bias_and_extra_config(tmp_path):
    torch.manual_seed(0)
    model = load_model("tiny", mtp_loss_weight=0.3, seq_balance_alpha=1e-4)
    with torch.no_grad():
        for layer in model.model.layers[1:]:
            layer.mlp.gate.e_score_correction_bias.normal_()
    back = load_model(save_model(model, build_tokenizer(), tmp_path / "ckpt"))
    assert back.mtp_loss_weight == 0.3 and back.seq_balance_alpha == 1e-4
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip_ours_transformers_ours_keeps_the_main_model_exact(tiny_checkpoint, tmp_path):
    ours = load_model(tiny_checkpoint).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    ids = torch.randint(10, 1000, (2, 12))
    assert torch.equal(plain(ids).logits, ours(ids).logits)
    plain.save_pretrained(tmp_path / "plain")
    again = load_model(tmp_path / "plain").eval()  # transformers drops MTP: main weights only
    a, b = ours.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith(f"model.layers.{N}."))
    assert torch.equal(again(ids).logits, ours(ids).logits)


def test_save_is_atomic_when_writing_fails(tiny_checkpoint, tmp_path, monkeypatch):
    model = load_model(tiny_checkpoint)
    out = save_model(model, None, tmp_path / "ckpt")
    before = sorted(p.name for p in out.iterdir())
    tok = build_tokenizer()
    monkeypatch.setattr(tok, "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_model(model, tok, out)
    assert sorted(p.name for p in out.iterdir()) == before  # the previous checkpoint, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary leftovers
    with pytest.raises(OSError):
        save_model(model, tok, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="tiny, small, deepseek-v3"):
        load_model("tinyy")


def test_missing_checkpoint_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such preset or path"):
        load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)


def test_config_of_another_model_type_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(ValueError, match="model_type is 'llama', expected 'deepseek_v3'"):
        load_model(tmp_path)


def test_config_that_is_not_json_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("model_type = 'deepseek_v3'")
    with pytest.raises(ValueError, match="config.json: not a JSON config"):
        load_model(tmp_path)


def test_config_json_gives_random_init_model(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({**PRESETS["tiny"], "model_type": "deepseek_v3"}))
    model = load_model(tmp_path / "c.json", num_nextn_predict_layers=2)
    assert len(model.model.layers) == N + 2


def test_mtp_keys_in_checkpoint_file_match_the_model(tiny_checkpoint):
    with safe_open(str(tiny_checkpoint / "model.safetensors"), "pt") as f:
        eh = f.get_tensor(f"model.layers.{N}.eh_proj.weight")
    assert torch.equal(eh, load_model(tiny_checkpoint).model.layers[N].eh_proj.weight)


@pytest.mark.parametrize("source", ["tiny", "checkpoint"])
def test_bf16_model_keeps_router_bias_in_fp32(source, tiny_checkpoint):
    model = load_model(tiny_checkpoint if source == "checkpoint" else source, dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    for layer in model.model.layers[1:]:
        assert layer.mlp.gate.e_score_correction_bias.dtype == torch.float32


def test_impossible_group_routing_is_a_clear_error():
    with pytest.raises(ValueError, match="n_routed_experts=16 must be divisible by n_group=3"):
        load_model("tiny", n_group=3)
    with pytest.raises(ValueError, match="topk_group=5 of n_group=4"):
        load_model("tiny", topk_group=5)


def test_one_tokenizer_loader_for_every_model_source(tiny_checkpoint, tmp_path):
    embedded = build_tokenizer().get_vocab()
    for source in (None, "tiny", tiny_checkpoint / "config.json"):
        assert load_tokenizer(source).get_vocab() == embedded
    own = load_tokenizer(tiny_checkpoint)
    assert own.get_vocab() == AutoTokenizer.from_pretrained(tiny_checkpoint).get_vocab()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{")
    with pytest.raises(ValueError, match=f"tokenizer: cannot load '{broken}'"):
        load_tokenizer(broken)
