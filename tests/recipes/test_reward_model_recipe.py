"""recipes/reward_model.py as users run it: 2 CPU processes from a checkpoint, held-out pairwise accuracy with the
checkpoint, resume, LoRA, and a final/ that AutoModelForSequenceClassification and the `reward_model` reward load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewards import get_reward
from tests.recipes.conftest import launch, load_recipe, log_history

pytestmark = pytest.mark.integration

ARGS = [
    "--config", "recipes/configs/tiny/reward_model.yaml", "--max_length", "64", "--per_device_train_batch_size", "4",
    "--per_device_eval_batch_size", "8", "--logging_steps", "1", "--save_steps", "2", "--eval_steps", "2",
    "--report_to", "none", "--disable_tqdm", "true", "--learning_rate", "1e-3",
]


@pytest.fixture(scope="module")
def preference_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pairs in TRL's explicit conversational layout: the right sum chosen, a wrong one rejected."""
    path = tmp_path_factory.mktemp("prefs") / "pairs.jsonl"
    with path.open("w") as f:
        for i in range(40):
            a, b = i * 7 % 50, i * 3 % 40
            f.write(json.dumps({
                "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
                "chosen": [{"role": "assistant", "content": f"The answer is \\boxed{{{a + b}}}."}],
                "rejected": [{"role": "assistant", "content": f"The answer is \\boxed{{{a + b + 1 + i % 5}}}."}],
            }) + "\n")
    return path


@pytest.fixture(scope="module")
def rm_run(tiny_checkpoint: Path, preference_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rm-run")
    launch("reward_model", *ARGS, "--model_name_or_path", str(tiny_checkpoint), "--dataset_path",
           str(preference_file), "--eval_size", "8", "--output_dir", str(out), "--max_steps", "2")
    return out


def test_two_process_training_logs_pairwise_accuracy_and_router_metrics(rm_run: Path):
    assert (rm_run / "checkpoint-2" / "rng_state_1.pth").is_file()  # a second rank really ran
    history = log_history(rm_run / "checkpoint-2")
    train_logs = [h for h in history if "loss" in h]
    assert train_logs and all("router/maxvio" in h and 0 <= h["accuracy"] <= 1 for h in train_logs)
    assert any("eval_accuracy" in h for h in history)  # held-out accuracy is in the checkpoint's state


def test_final_is_a_classifier_with_its_heldout_accuracy(rm_run: Path, tiny_checkpoint: Path):
    final = rm_run / "final"
    results = json.loads((final / "reward_eval.json").read_text())
    assert results["pairs"] == 8 and 0 <= results["eval_accuracy"] <= 1
    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    assert type(model).__name__ == "DeepseekV3ForSequenceClassification" and model.config.num_labels == 1
    assert json.loads((final / "config.json").read_text())["architectures"] == ["DeepseekV3ForSequenceClassification"]
    # The backbone started from the checkpoint: its weights moved, but only by training (same shapes, close).
    base = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=1)
    for name, param in model.model.named_parameters():
        assert param.shape == dict(base.model.named_parameters())[name].shape


def test_reward_model_reward_scores_with_the_final_checkpoint_as_it_is(rm_run: Path):
    final = rm_run / "final"
    reward = get_reward({"name": "reward_model", "model": str(final), "device": "cpu", "batch_size": 2})
    prompts = [[{"role": "user", "content": "What is 2 + 3?"}]] * 3
    completions = [[{"role": "assistant", "content": t}] for t in ("\\boxed{5}", "\\boxed{6}", "no idea")]
    scores = reward(prompts=prompts, completions=completions)
    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    with torch.no_grad():
        expected = [model(**tokenizer.apply_chat_template(p + c, return_dict=True, return_tensors="pt")).logits.item()
                    for p, c in zip(prompts, completions, strict=True)]
    assert scores == pytest.approx(expected, abs=1e-4) and reward.failures == 0


def test_resume_continues_from_the_last_complete_checkpoint(rm_run: Path, tiny_checkpoint: Path,
                                                            preference_file: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(rm_run, run)
    proc = launch("reward_model", *ARGS, "--model_name_or_path", str(tiny_checkpoint), "--dataset_path",
                  str(preference_file), "--eval_size", "8", "--output_dir", str(run), "--max_steps", "3",
                  "--resume_from_checkpoint", "true", processes=1)
    assert proc.stdout.count("'loss':") == 1  # only step 3 ran
    assert [h["step"] for h in log_history(run / "checkpoint-3") if "loss" in h] == [1, 2, 3]


def test_lora_reward_model_on_pairs_it_samples_first(tiny_checkpoint: Path, tmp_path: Path):
    """A `preferences:` section samples the policy's pairs before training (as the pipeline runs it); LoRA saves
    merged weights."""
    verifier = tmp_path / "odd.py"  # the random policy answers nothing right: split its samples by length instead
    verifier.write_text("def odd(completions, **kwargs):\n    return [float(len(c) % 2) for c in completions]\n")
    config = yaml.safe_load(Path("recipes/configs/tiny/reward_model.yaml").read_text())
    config["preferences"] = {
        "output_dir": str(tmp_path / "pairs"), "prompts": [{"builtin": "arithmetic", "rows": 12, "split": "train"}],
        "policy": {"backend": "hf", "model": "unused", "device": "cpu", "batch_size": 12},
        "sampling": {"n": 4, "temperature": 1.0, "max_new_tokens": 6, "seed": 0},
        "verify": {"rewards": [f"{verifier}:odd"]}, "heldout": 0.0,
    }
    (tmp_path / "rm.yaml").write_text(yaml.safe_dump(config))
    args = [*ARGS[2:], "--config", str(tmp_path / "rm.yaml"), "--policy_model", str(tiny_checkpoint)]
    launch("reward_model", *args, "--model_name_or_path", str(tiny_checkpoint), "--eval_size", "0",
           "--eval_strategy", "no", "--output_dir", str(tmp_path / "rm"), "--max_steps", "1", "--use_peft", "true",
           "--lora_r", "4", "--save_strategy", "no", processes=1)
    pairs = (tmp_path / "pairs" / "train.jsonl").read_text().splitlines()
    assert pairs and (tmp_path / "pairs" / "COMPLETE").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm" / "final")
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert json.loads((tmp_path / "rm" / "final" / "reward_eval.json").read_text())["pairs"] == 0


@pytest.mark.parametrize("engine", ["zero3", "fsdp2"])
def test_sharded_engines_train_to_the_same_loadable_classifier(engine: str, tiny_checkpoint: Path,
                                                               preference_file: Path, tmp_path: Path):
    """The launch configs of the scale guide work for the reward model too: a whole final/ that plain transformers
    loads, backbone and router biases trained."""
    proc = launch("reward_model", *ARGS, "--model_name_or_path", str(tiny_checkpoint), "--dataset_path",
                  str(preference_file), "--eval_size", "8", "--output_dir", str(tmp_path), "--max_steps", "2",
                  "--save_strategy", "no", engine=engine)
    assert proc.stdout.count("'loss':") == 2
    final = tmp_path / "final"
    model = AutoModelForSequenceClassification.from_pretrained(final)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=1)
    trained, start = dict(model.model.named_parameters()), dict(base.model.named_parameters())
    assert trained.keys() == start.keys() and all(trained[k].shape == start[k].shape for k in start)
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # the backbone trained, and was saved whole
    biases = [(name, buf) for name, buf in model.named_buffers() if name.endswith("e_score_correction_bias")]
    start_buffers = dict(base.named_buffers())
    assert biases and all(not torch.equal(buf, start_buffers[name]) for name, buf in biases)  # the bias update
    assert 0 <= json.loads((final / "reward_eval.json").read_text())["eval_accuracy"] <= 1


def test_data_that_is_not_preferences_is_a_clear_error(tmp_path: Path):
    from trl import RewardConfig

    from posttrain.training import ModelArguments

    rows = tmp_path / "sft.jsonl"
    rows.write_text(json.dumps({"prompt": "1+1?", "response": "2"}) + "\n")
    recipe = load_recipe("reward_model")
    args = RewardConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    with pytest.raises(ValueError, match=r"not preference data.*chosen"):
        recipe.main(recipe.RewardModelScriptArguments(dataset_path=str(rows)), args, ModelArguments())
