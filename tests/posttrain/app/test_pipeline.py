"""The pipeline engine: stages in order, skipped when complete, rerun with --from, a table and a plot at the end."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from posttrain.app.pipeline import load_pipeline_config, run_pipeline, stage_command

pytestmark = pytest.mark.integration

# A stand-in recipe: copies --model_name_or_path to <output_dir>/final, as a finished recipe leaves it, and counts runs.
COPY_RECIPE = textwrap.dedent('''
    import argparse, shutil, sys
    from pathlib import Path
    p = argparse.ArgumentParser()
    p.add_argument("--config"); p.add_argument("--output_dir"); p.add_argument("--model_name_or_path")
    p.add_argument("--resume_from_checkpoint")
    a = p.parse_args()
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "runs.log", "a") as f:
        f.write(out.name + "\\n")
    shutil.copytree(a.model_name_or_path, out / "final")
''')


@pytest.fixture()
def pipeline_yaml(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    (tmp_path / "copy.py").write_text(COPY_RECIPE)
    (tmp_path / "stage.yaml").write_text("{}\n")
    config = {
        "output_dir": str(tmp_path / "out"),
        "stages": [
            {"name": "sft", "recipe": str(tmp_path / "copy.py"), "config": str(tmp_path / "stage.yaml"),
             "args": {"model_name_or_path": str(tiny_checkpoint)}},
            {"name": "grpo", "recipe": str(tmp_path / "copy.py"), "config": str(tmp_path / "stage.yaml"),
             "args": {"model_name_or_path": "{sft}"}, "targets": ["arithmetic"]},
        ],
        "eval": {"benchmarks": ["arithmetic"], "limit": 4, "max_new_tokens": 4, "batch_size": 4,
                 "final_samples": 2},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def runs(config_path: Path) -> list[str]:
    log = Path(load_pipeline_config(config_path).output_dir) / "runs.log"
    return log.read_text().split() if log.exists() else []


def test_stage_command_fills_in_earlier_stages_and_resumes(pipeline_yaml: Path):
    config = load_pipeline_config(pipeline_yaml)
    cmd = stage_command(config, config.stages[1])
    assert cmd[cmd.index("--model_name_or_path") + 1] == f"{config.output_dir}/sft/final"
    assert cmd[cmd.index("--resume_from_checkpoint") + 1] == "true"
    config.stages[1].args["extra"] = ["data={output_dir}/x", "{sft}"]
    cmd = stage_command(config, config.stages[1])
    assert cmd[cmd.index("--extra") + 1 :][:2] == [f"data={config.output_dir}/x", f"{config.output_dir}/sft/final"]
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]


def test_stages_get_the_cores_not_one_thread(pipeline_yaml: Path, monkeypatch: pytest.MonkeyPatch):
    """`accelerate launch` would set OMP_NUM_THREADS=1 for a single CPU process."""
    config = load_pipeline_config(pipeline_yaml)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cmd = stage_command(config, config.stages[0])
    cores = len(os.sched_getaffinity(0))
    assert cmd[cmd.index("--num_cpu_threads_per_process") + 1] == str(max(1, cores // config.stages[0].num_processes))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    cmd = stage_command(config, config.stages[0])
    assert cmd[cmd.index("--num_cpu_threads_per_process") + 1] == "3"


def test_pipeline_runs_stages_then_skips_them_then_reruns_from_one(pipeline_yaml: Path):
    config = load_pipeline_config(pipeline_yaml)
    table = run_pipeline(config, log=lambda *_: None)
    assert list(table) == ["sft", "grpo"] and set(table["sft"]) == {"arithmetic"}
    out = Path(config.output_dir)
    results = (out / "results.md").read_text()
    assert "| stage | from | arithmetic (n=4) |" in results
    # the same model copied: no change, bold as the stage's target; the last stage samples: pass@k and maj@k
    assert "| grpo | sft | **0.000 (+0.000 ± 0.000)** |" in results
    assert "| benchmark | pass@2 | maj@2 | pass@1 |" in results
    assert (out / "stages.png").stat().st_size > 0
    assert runs(pipeline_yaml) == ["sft", "grpo"]

    run_pipeline(config, log=lambda *_: None)
    assert runs(pipeline_yaml) == ["sft", "grpo"]  # both complete: nothing reran

    run_pipeline(config, from_stage="grpo", log=lambda *_: None)
    assert runs(pipeline_yaml) == ["sft", "grpo", "grpo"]


def test_unknown_stage_and_bad_keys_are_clear_errors(pipeline_yaml: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="not a stage of this pipeline"):
        run_pipeline(load_pipeline_config(pipeline_yaml), from_stage="nope")
    config = json.loads(pipeline_yaml.read_text())
    config["stages"][1]["targets"] = ["gsm8k"]
    pipeline_yaml.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"stages\[1\].targets: \['gsm8k'\] are not among eval.benchmarks"):
        load_pipeline_config(pipeline_yaml)
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: x\nstages:\n  - {name: a, recipe: r.py, config: c.yaml, epochs: 3}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: stages\[0\].*epochs"):
        load_pipeline_config(bad)
