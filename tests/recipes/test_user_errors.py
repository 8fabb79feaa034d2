"""A user's mistake, in every recipe and in the CLIs, ends with one error line naming the option and what would be
right, exit status 2 and no traceback: run as users run them, each case in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recipes.conftest import REPO

pytestmark = pytest.mark.integration

GRPO = ("recipes/grpo.py", "--config", "recipes/configs/tiny/grpo.yaml")
SFT = ("recipes/sft.py", "--config", "recipes/configs/tiny/sft.yaml")
REFRESH = ("recipes/mtp_refresh.py", "--config", "recipes/configs/tiny/mtp_refresh.yaml")
REWARD_MODEL = ("recipes/reward_model.py", "--config", "recipes/configs/tiny/reward_model.yaml")
PREFERENCES = ("data", "preferences", "--config")
CLI = ("-m", "posttrain.app.cli")

CASES = {
    "grpo-unknown-reward": ((*GRPO, "--reward_funcs", "no_such_reward"), "recipes/grpo.py",
                            ["--reward_funcs: unknown reward 'no_such_reward': use one of ['code', 'format'"]),
    "grpo-missing-reward-file": ((*GRPO, "--reward_funcs", "math", "/nowhere/my_rewards.py:score"),
                                 "recipes/grpo.py",
                                 ["--reward_funcs: reward '/nowhere/my_rewards.py:score': file /nowhere/my_rewards.py "
                                  "does not exist"]),
    "grpo-unknown-preset": ((*GRPO, "--model_name_or_path", "no_such_preset"), "recipes/grpo.py",
                            ["--model_name_or_path: no such preset or path 'no_such_preset'", "tiny, small"]),
    "grpo-missing-dataset": ((*GRPO, "--dataset_path", "/nowhere/prompts.jsonl"), "recipes/grpo.py",
                             ["--dataset_path: ", "/nowhere/prompts.jsonl: no such file or directory"]),
    "grpo-missing-config": (("recipes/grpo.py", "--config", "/nowhere/grpo.yaml"), "recipes/grpo.py",
                            ["--config: /nowhere/grpo.yaml: no such file"]),
    "sft-missing-dataset": ((*SFT, "--dataset_path", "/nowhere/mix.yaml"), "recipes/sft.py",
                            ["--dataset_path: ", "/nowhere/mix.yaml"]),
    "sft-unknown-preset": ((*SFT, "--model_name_or_path", "tinyy"), "recipes/sft.py",
                           ["--model_name_or_path: no such preset or path 'tinyy'"]),
    "distill-missing-config": (("recipes/distill.py", "--config", "/nowhere/distill.yaml"), "recipes/distill.py",
                               ["--config: /nowhere/distill.yaml: no such file"]),
    "mtp-refresh-unknown-preset": ((*REFRESH, "--model_name_or_path", "tinyy"), "recipes/mtp_refresh.py",
                                   ["--model_name_or_path: no such preset or path 'tinyy'"]),
    "grpo-bad-vote-option": ((*GRPO, "--reward_funcs", '{"name": "vote", "min_share": 2}'), "recipes/grpo.py",
                             ["--reward_funcs: reward 'vote': min_share must be in [0, 1], got 2"]),
    "reward-model-missing-dataset": ((*REWARD_MODEL, "--dataset_path", "/nowhere/prefs"), "recipes/reward_model.py",
                                     ["--dataset_path: ", "/nowhere/prefs: no such file or directory"]),
    "reward-model-not-preferences": ((*REWARD_MODEL, "--dataset_path", "{tmp}/sft.jsonl"), "recipes/reward_model.py",
                                     ["--dataset_path: ", "sft.jsonl: not preference data", "`chosen` and `rejected`",
                                      "(with an explicit `prompt` or a shared conversation start)"]),
    "reward-model-unknown-preset": ((*REWARD_MODEL, "--dataset_path", "{tmp}/prefs.jsonl", "--eval_size", "0",
                                     "--model_name_or_path", "tinyy"), "recipes/reward_model.py",
                                    ["--model_name_or_path: ", "'tinyy'"]),
    "pipeline-missing-config": (("recipes/pipeline.py", "--config", "/nowhere/pipeline.yaml"), "recipes/pipeline.py",
                                ["--config: pipeline config /nowhere/pipeline.yaml: no such file"]),
    "pipeline-stage-stopped": (("recipes/pipeline.py", "--config", "{tmp}/pipeline.yaml"), "recipes/pipeline.py",
                               ["stage 'sft' stopped: recipes/sft.py: error: --dataset_path: mix spec "
                                "/nowhere/mix.yaml: no such file"]),
    "cli-data-missing-spec": ((*CLI, "data", "build", "--config", "/nowhere/mix.yaml", "--output", "{tmp}/mix"),
                              "posttrain data build", ["mix spec /nowhere/mix.yaml: no such file"]),
    "cli-preferences-missing-config": ((*CLI, *PREFERENCES, "/nowhere/prefs.yaml"), "posttrain data preferences",
                                       ["preference config /nowhere/prefs.yaml: no such file"]),
    "cli-preferences-bad-value": ((*CLI, *PREFERENCES, "recipes/configs/tiny/preferences.yaml", "sampling.n=1"),
                                  "posttrain data preferences",
                                  ["preferences.yaml: sampling.n: pairs need at least 2 samples per prompt, got 1"]),
    "cli-preferences-missing-policy": ((*CLI, *PREFERENCES, "recipes/configs/tiny/preferences.yaml",
                                        "policy.model=/nowhere/ckpt", "output_dir={tmp}/prefs",
                                        "prompts=[{builtin: arithmetic, rows: 4}]"), "posttrain data preferences",
                                       ["policy.model: checkpoint /nowhere/ckpt does not exist"]),
    "cli-rewards-self-judge-rubric": ((*CLI, "rewards", "check", '{"name": "self_judge", "rubric": "Rate it."}',
                                       "--input", "{tmp}/rows.jsonl"), "posttrain rewards check",
                                      ["reward 'self_judge': the rubric must show the answer: put {completion} in it"]),
    "cli-rewards-unknown": ((*CLI, "rewards", "check", "no_such_reward", "--input", "{tmp}/rows.jsonl"),
                            "posttrain rewards check", ["unknown reward 'no_such_reward': use one of"]),
    "cli-model-missing-config": ((*CLI, "model", "info", "--config", "/nowhere/config.json"), "posttrain model info",
                                 ["--config: no such preset or path '/nowhere/config.json'"]),
    "eval-missing-checkpoint": (("eval/run.py", "--model", "/nowhere/ckpt", "--benchmark", "arithmetic",
                                 "--output", "{tmp}/eval"), "python eval/run.py",
                                ["checkpoint /nowhere/ckpt does not exist"]),
    "eval-vllm-not-installed": (("eval/run.py", "--model", "{ckpt}", "--benchmark", "arithmetic", "--limit", "2",
                                 "--backend", "vllm", "--output", "{tmp}/eval"), "python eval/run.py",
                                ["--backend vllm needs vLLM: pip install 'posttrain[vllm]' (or use --backend hf)"]),
}


def write_inputs(tmp_path: Path) -> None:
    """The small input files the cases name as `{tmp}/...`."""
    (tmp_path / "rows.jsonl").write_text('{"prompt": "1+1?", "completion": "2"}\n')
    (tmp_path / "sft.jsonl").write_text('{"prompt": "1+1?", "response": "2"}\n')
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "1+1?", "chosen": "2", "rejected": "3"}\n')
    (tmp_path / "pipeline.yaml").write_text(
        f"output_dir: {tmp_path}/pipeline\nstages:\n  - {{name: sft, recipe: recipes/sft.py, config: "
        "recipes/configs/tiny/sft.yaml, args: {dataset_path: /nowhere/mix.yaml}}\n"
    )
    (tmp_path / "buggy.py").write_text("def score(completions, **kwargs):\n    return [1.0]\n\n\nNAMES = {}['x']\n")
    # vLLM's import fails as where it is not installed, installed or not (TRL is not imported)
    (tmp_path / "hide" / "vllm").mkdir(parents=True)
    (tmp_path / "hide" / "vllm" / "__init__.py").write_text("raise ModuleNotFoundError('vllm')\n")


BUG = (*CLI, "rewards", "check", "{tmp}/buggy.py:score", "--input", "{tmp}/rows.jsonl")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, dict]:
    """Every case run as `python ARGS` from the repo root, each in a process of its own (forked from one that
    imported the libraries once: tests/recipes/forked_entry_points.py): {case: returncode, stdout, stderr}."""
    tmp = tmp_path_factory.mktemp("mistakes")
    write_inputs(tmp)
    cases = {}
    for name, args in {**{case: spec[0] for case, spec in CASES.items()}, "bug": BUG}.items():
        argv = [a.replace("{tmp}", str(tmp)).replace("{ckpt}", str(tiny_checkpoint)) for a in args]
        if argv[0].startswith("recipes/"):
            argv += ["--output_dir", str(tmp / name)]  # the CLIs take none
        cases[name] = {"argv": argv, "env": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
                       "path": [str(tmp / "hide")] if "vllm" in args else []}
    (tmp / "cases.json").write_text(json.dumps(cases))
    subprocess.run([sys.executable, "tests/recipes/forked_entry_points.py", str(tmp / "cases.json"), str(tmp / "out")],
                   cwd=REPO, check=True, timeout=1800)
    return {name: json.loads((tmp / "out" / f"{name}.json").read_text()) for name in cases}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_mistake_is_one_line_and_exit_status_2(case, results):
    _, prog, expected = CASES[case]
    done = results[case]
    assert done["returncode"] == 2, done["stderr"][-3000:]
    assert "Traceback" not in done["stderr"], done["stderr"][-3000:]
    last = done["stderr"].strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error: "), last
    for part in expected:
        assert part in last, last


def test_a_bug_keeps_its_traceback(results):
    # A reward file whose own code fails: the traceback points into it, as any bug's should.
    done = results["bug"]
    assert done["returncode"] == 1, done["stderr"][-3000:]
    assert "Traceback" in done["stderr"] and "buggy.py\", line 5" in done["stderr"], done["stderr"][-3000:]
    assert done["stderr"].strip().splitlines()[-1] == "KeyError: 'x'"
