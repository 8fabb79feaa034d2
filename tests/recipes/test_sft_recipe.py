"""recipes/sft.py as users run it: accelerate launch on 2 CPU processes, a mix built once, a loadable checkpoint
(resume: test_engines.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain.model.io import MTP_COPIES_FILE
from tests.recipes.conftest import launch, load_recipe, log_history

pytestmark = pytest.mark.integration

TINY_ARGS = [
    "--config", "recipes/configs/tiny/sft.yaml", "--eval_size", "8", "--max_length", "64",
    "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4", "--logging_steps", "1",
    "--save_steps", "2", "--eval_steps", "2", "--report_to", "none", "--disable_tqdm", "true",
]
RECORD_DATA_LOADS = "tests/recipes/record_data_loads.py"  # logs each process's mix builds and loads


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory, sft_rows: Path) -> Path:
    out = tmp_path_factory.mktemp("sft-run")
    launch("sft", *TINY_ARGS, "--dataset_path", str(sft_rows), "--output_dir", str(out), "--max_steps", "2")
    return out


def test_two_process_sft_logs_router_and_mtp_metrics(sft_run: Path):
    assert (sft_run / "checkpoint-2" / "rng_state_1.pth").is_file()  # a second rank really ran
    history = log_history(sft_run / "checkpoint-2")
    train_logs = [h for h in history if "loss" in h]
    assert train_logs and all("router/maxvio" in h and "mtp_loss" in h for h in train_logs)
    assert any("eval_loss" in h for h in history)


def test_final_checkpoint_loads_in_plain_transformers(sft_run: Path):
    model = AutoModelForCausalLM.from_pretrained(sft_run / "final")
    ids = torch.tensor([[1, 2, 3]])
    assert model(ids).logits.shape == (1, 3, model.config.vocab_size)


def test_trainer_checkpoints_have_the_released_mtp_layout(sft_run: Path):
    checkpoint = sft_run / "checkpoint-2"
    n = json.loads((checkpoint / "config.json").read_text())["num_hidden_layers"]
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    assert index["weight_map"][f"model.layers.{n}.embed_tokens.weight"] == MTP_COPIES_FILE
    assert index["weight_map"][f"model.layers.{n}.self_attn.kv_a_proj_with_mqa.weight"] == "model.safetensors"
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, model.config.vocab_size)


def test_bad_dataset_path_is_a_clear_error(tmp_path: Path):
    sft = load_recipe("sft")
    from trl import SFTConfig

    from posttrain.training import ModelArguments

    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    with pytest.raises(Exception, match="missing.jsonl"):
        sft.main(sft.SFTScriptArguments(dataset_path=str(tmp_path / "missing.jsonl")), args, ModelArguments())


def test_two_processes_build_a_mix_spec_once_and_both_train_on_its_rows(tmp_path: Path):
    spec = tmp_path / "mix.yaml"
    spec.write_text("seed: 0\nmax_tokens: 256\nsources:\n  - builtin: arithmetic\n    rows: 48\n")
    out, calls = tmp_path / "run", tmp_path / "calls"
    calls.mkdir()
    launch("sft", *TINY_ARGS, "--dataset_path", str(spec), "--output_dir", str(out), "--max_steps", "1",
           "--save_strategy", "no", "--eval_size", "0", "--eval_strategy", "no",
           wrappers=(RECORD_DATA_LOADS,), env={"RECORD_DATA_LOADS": str(calls)})
    built = json.loads((out / "data" / "stats.json").read_text())
    assert built["rows"] == 48 and (out / "final").is_dir()
    assert not [p.name for p in (out / "data").parent.iterdir() if ".tmp" in p.name]
    rank = [[json.loads(line) for line in (calls / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert [c["call"] for c in rank[0]] == ["build_mix", "load_mix"]  # the main process builds, then loads
    assert [c["call"] for c in rank[1]] == ["load_mix"]  # the other one only loads ...
    assert rank[1][0]["start"] >= rank[0][0]["end"]  # ... once the build is finished
    assert rank[1][0]["rows_sha256"] == rank[0][1]["rows_sha256"]  # the same rows
