"""`posttrain model info` and `posttrain model init` as users run them."""

from __future__ import annotations

import json

from posttrain.app.cli import main
from posttrain.model import load_config, load_model
from posttrain.model.info import model_info


def test_cli_info_json(capsys):
    assert main(["model", "info", "--preset", "deepseek-v3", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {
        "total_params", "activated_params", "mtp_params", "kv_cache_bytes_per_token", "mha_kv_cache_bytes_per_token"
    }


def test_cli_info_reads_a_checkpoint_config(tiny_checkpoint, capsys):
    main(["model", "info", "--model", str(tiny_checkpoint), "--json"])
    assert json.loads(capsys.readouterr().out)["total_params"] == model_info(load_config("tiny"))["total_params"]


def test_cli_info_bad_path_exits_2_with_one_line(tmp_path, capsys):
    assert main(["model", "info", "--config", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith("posttrain model info: error: --config: no such preset or path")


def test_cli_init_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert main(["model", "init", "--preset", "tiny", "--output", str(tmp_path / "ck")]) == 0
    assert (tmp_path / "ck" / "tokenizer.json").exists()
    assert load_model(tmp_path / "ck").config.num_nextn_predict_layers == 1
