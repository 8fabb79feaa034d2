"""recipes/grpo.py as users run it: rule rewards, plugin rewards, a failing reward, resume, and early errors."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from trl import GRPOConfig

from posttrain.training import ModelArguments
from tests.recipes.conftest import launch, load_recipe, log_history

pytestmark = pytest.mark.integration

PLUGIN = textwrap.dedent('''
    def short_bonus(prompts, completions, **kwargs):
        """Plugin given as module:function: rewards shorter completions."""
        return [1.0 / (1 + len(str(c))) for c in completions]

    def flaky(prompts, completions, **kwargs):
        """Raises on every call: training must go on, with the failures counted."""
        raise RuntimeError("flaky reward is down")
''')


def grpo_args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config", "recipes/configs/tiny/grpo.yaml", "--model_name_or_path", str(model), "--output_dir", str(out),
        "--num_prompts", "16", "--num_generations", "2", "--per_device_train_batch_size", "2",
        "--max_completion_length", "8", "--logging_steps", "1", "--save_steps", "2", "--report_to", "none",
        "--disable_tqdm", "true", *extra,
    ]


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    (root / "my_rewards.py").write_text(PLUGIN)
    return root


@pytest.fixture(scope="module")
def grpo_run(tiny_checkpoint: Path, plugin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grpo-run")
    launch("grpo", *grpo_args(tiny_checkpoint, out, "--max_steps", "2", "--reward_funcs", "math", "format", "steps",
                              "my_rewards:short_bonus", f"{plugin_dir}/my_rewards.py:flaky",
                              "--reward_weights", "1", "0.1", "0.5", "0.1", "1", "--speculative_generation", "true"),
           env={"PYTHONPATH": str(plugin_dir)})
    return out


def test_two_process_grpo_logs_every_reward_and_router_metrics(grpo_run: Path):
    assert (grpo_run / "checkpoint-2" / "rng_state_1.pth").is_file()  # a second rank really ran
    logs = [h for h in log_history(grpo_run / "checkpoint-2") if "loss" in h]
    assert len(logs) == 2
    for name in ("math", "format", "steps", "short_bonus", "flaky"):
        assert f"rewards/{name}/mean" in logs[-1]
    assert "router/maxvio" in logs[-1]
    assert 0 <= logs[-1]["mtp/acceptance"] <= 1  # rollouts drafted with the MTP module


def test_a_reward_that_raises_is_counted_and_training_continues(grpo_run: Path):
    logs = [h for h in log_history(grpo_run / "checkpoint-2") if "loss" in h]
    assert logs[-1]["rewards/flaky/failures"] > 0
    assert logs[-1]["rewards/math/failures"] == 0
    assert (grpo_run / "final" / "config.json").is_file()


def test_grpo_resumes_from_checkpoint(grpo_run: Path, tiny_checkpoint: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(grpo_run, run)
    proc = launch("grpo", *grpo_args(tiny_checkpoint, run, "--max_steps", "3", "--resume_from_checkpoint", "true",
                                     "--reward_funcs", "math", "--reward_weights", "1"), processes=1)
    assert proc.stdout.count("'loss':") == 1  # only step 3 ran
    assert json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2


def _run_main(tmp_path: Path, **script) -> None:
    grpo = load_recipe("grpo")
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    grpo.main(grpo.GRPOScriptArguments(num_prompts=4, **script), args, ModelArguments())


def test_unknown_reward_lists_the_available_ones(tmp_path: Path):
    with pytest.raises(ValueError, match=r"nonexistent.*math"):
        _run_main(tmp_path, reward_funcs=["nonexistent"])


def test_plugin_that_fails_to_import_says_why(tmp_path: Path):
    with pytest.raises(ValueError, match="no_such_module"):
        _run_main(tmp_path, reward_funcs=["no_such_module:fn"])


def test_missing_column_names_the_reward_and_the_column(tmp_path: Path):
    rows = tmp_path / "prompts.jsonl"
    rows.write_text(json.dumps({"prompt": "What is 1 + 1?", "solution": "2"}) + "\n")
    with pytest.raises(ValueError, match=r"code.*tests"):
        _run_main(tmp_path, reward_funcs=["code"], dataset_path=str(rows))


def test_grpo_with_self_rewards_only(tiny_checkpoint: Path, tmp_path: Path):
    """No gold read for the reward: `vote` on prompts that come without labels (`unlabeled_tasks`) and the policy
    judging itself (`self_judge`, bound to the live model)."""
    judge = json.dumps({"name": "self_judge", "votes": 2, "max_new_tokens": 4})
    vote = json.dumps({"name": "vote", "unlabelled_only": True})
    proc = launch("grpo", *grpo_args(tiny_checkpoint, tmp_path, "--max_steps", "1", "--save_strategy", "no",
                                     "--unlabeled_tasks", "word_problems", "--reward_funcs", vote, judge,
                                     "--reward_weights", "1", "1"), processes=1)
    for metric in ("'rewards/vote/mean'", "'vote/labelled'", "'vote/share'", "'rewards/self_judge/mean'"):
        assert metric in proc.stdout
    # A random policy states no verdict: its self_judge rows fail (counted), training goes on to a final model.
    assert "'rewards/self_judge/failures'" in proc.stdout and (tmp_path / "final" / "config.json").is_file()
