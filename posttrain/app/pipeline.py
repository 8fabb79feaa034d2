"""The main job: chain recipe stages (SFT -> distillation -> GRPO), evaluating after each one.

A pipeline YAML names its stages in order; each runs its own recipe as users would (`accelerate launch
recipes/<stage>.py --config ...`) with overrides in which `{output_dir}` is the pipeline's output dir and
`{<stage>}` is an earlier stage's final checkpoint. A stage is complete when its `final/` checkpoint exists (it is
written atomically), so rerunning skips finished stages and a killed stage resumes from its last complete
checkpoint; `from_stage` reruns from one stage on.

>>> config = load_pipeline_config("recipes/configs/tiny/pipeline.yaml")
>>> [stage.name for stage in config.stages]
['sft', 'distill', 'grpo', 'mtp_refresh']
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from posttrain.config_files import from_mapping, read_yaml
from posttrain.cpu_threads import launch_threads
from posttrain.errors import ERROR_FILE_ENV, UserError
from posttrain.files import replacing, write_atomic
from posttrain.training import FINAL_DIR


@dataclass
class Stage:
    """One recipe run: `recipe` (a script path), its YAML `config`, and `args` overriding the config."""

    name: str
    recipe: str
    config: str
    args: dict[str, Any] = field(default_factory=dict)
    num_processes: int = 1
    evaluate: bool = True  # False for stages that leave the main model as it was (e.g. MTP refresh)


@dataclass
class EvalSettings:
    """What `eval.evaluate` runs after each stage (greedy pass@1 on held-out sets by default)."""

    benchmarks: list[str] = field(default_factory=lambda: ["arithmetic"])
    limit: int | None = 200
    max_new_tokens: int = 192
    batch_size: int = 64


@dataclass
class PipelineConfig:
    """The stages in order, where they write, and the evaluation between them."""

    output_dir: str
    stages: list[Stage]
    eval: EvalSettings = field(default_factory=EvalSettings)


def load_pipeline_config(path: str | os.PathLike, output_dir: str | None = None) -> PipelineConfig:
    """Read and check a pipeline YAML (`output_dir`, when given, replaces the file's); errors name the file and the
    bad key."""
    raw = read_yaml(path, "pipeline config")
    if not isinstance(raw, dict) or "stages" not in raw or "output_dir" not in raw:
        raise UserError(f"{path}: a pipeline config is a mapping with 'output_dir' and 'stages'")
    stages = [from_mapping(Stage, item, f"{path}: stages[{i}]") for i, item in enumerate(raw["stages"])]
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: stage names must be unique, got {names}")
    settings = from_mapping(EvalSettings, raw.get("eval", {}), f"{path}: eval")
    return from_mapping(PipelineConfig, {**raw, "stages": stages, "eval": settings,
                                         "output_dir": output_dir or raw["output_dir"]}, str(path))


def stage_dir(config: PipelineConfig, stage: Stage) -> Path:
    """Where a stage writes: its `output_dir` override, else `<output_dir>/<stage>`."""
    return Path(_fill(str(stage.args.get("output_dir", f"{{output_dir}}/{stage.name}")), config))


def _fill(value: Any, config: PipelineConfig) -> Any:
    if isinstance(value, list):
        return [_fill(v, config) for v in value]
    if not isinstance(value, str):
        return value
    names = {"output_dir": config.output_dir}
    names |= {s.name: str(Path(config.output_dir) / s.name / FINAL_DIR) for s in config.stages}
    return value.format(**names)


def stage_command(config: PipelineConfig, stage: Stage) -> list[str]:
    """The `accelerate launch` command line of a stage, overrides filled in; resumes a killed run."""
    args = {**stage.args, "output_dir": str(stage_dir(config, stage)), "resume_from_checkpoint": "true"}
    flat: list[str] = []
    for key, value in args.items():
        value = _fill(value, config)
        values = value if isinstance(value, list) else [value]
        flat += [f"--{key}", *(json.dumps(v) if isinstance(v, dict) else str(v) for v in values)]
    # --quiet: no launcher traceback over the stage's own error (a single process; several print torchrun's summary)
    launcher = ["--quiet", "--num_processes", str(stage.num_processes), "--mixed_precision", "no",
                "--num_cpu_threads_per_process", str(launch_threads(stage.num_processes))]
    return [sys.executable, "-m", "accelerate.commands.launch", *launcher, stage.recipe, "--config", stage.config,
            *flat]


def run_pipeline(config: PipelineConfig, from_stage: str | None = None, log=None) -> dict[str, dict[str, float]]:
    """Run every stage not yet complete (all from `from_stage` on), evaluate each, write the table and plot.

    Returns {stage: {benchmark: pass@1}}.
    """
    import eval as evaluation

    log = log or functools.partial(print, flush=True)  # stages write to the same stdout: keep the order
    names = [s.name for s in config.stages]
    if from_stage is not None and from_stage not in names:
        raise UserError(f"--from {from_stage!r}: not a stage of this pipeline ({', '.join(names)})")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rerun = names[names.index(from_stage):] if from_stage else []
    for name in rerun:
        shutil.rmtree(stage_dir(config, config.stages[names.index(name)]), ignore_errors=True)
        (out / "eval" / f"{name}.json").unlink(missing_ok=True)

    table: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}
    for stage in config.stages:
        final = stage_dir(config, stage) / FINAL_DIR
        if (final / "config.json").is_file():
            log(f"[pipeline] {stage.name}: complete, skipped ({final})")
        else:
            log(f"[pipeline] {stage.name}: running {' '.join(stage_command(config, stage))}")
            start = time.perf_counter()
            command = stage_command(config, stage)
            with tempfile.TemporaryDirectory() as tmp:
                note = Path(tmp) / "error"  # the stage's own error line, if it stopped on a user's mistake
                env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", ERROR_FILE_ENV: str(note)}
                done = subprocess.run(command, env=env)
                if done.returncode and note.is_file():
                    raise UserError(f"stage {stage.name!r} stopped: {note.read_text()}")
            if done.returncode:
                raise subprocess.CalledProcessError(done.returncode, command)
            timings[stage.name] = time.perf_counter() - start
        if not stage.evaluate:
            continue
        cached = out / "eval" / f"{stage.name}.json"
        if not cached.is_file():
            start = time.perf_counter()
            results = evaluation.evaluate(
                [final], config.eval.benchmarks, limit=config.eval.limit, max_new_tokens=config.eval.max_new_tokens,
                batch_size=config.eval.batch_size, output_dir=out / "eval" / stage.name,
            )
            scores = {r.benchmark: r.metrics["pass@1"] for r in results}
            write_atomic(cached, json.dumps(scores, indent=2))
            timings[f"eval:{stage.name}"] = time.perf_counter() - start
        table[stage.name] = json.loads(cached.read_text())
        log(f"[pipeline] {stage.name}: " + ", ".join(f"{b} {v:.3f}" for b, v in table[stage.name].items()))
    write_atomic(out / "results.md", results_markdown(table, timings))
    plot_stages(table, out / "stages.png")
    log((out / "results.md").read_text())
    return table


def results_markdown(table: dict[str, dict[str, float]], timings: dict[str, float] | None = None) -> str:
    """The stage x benchmark table (greedy pass@1 on the held-out sets), dated, with this run's timings.

    >>> print(results_markdown({"sft": {"arithmetic": 0.5}}).splitlines()[2])
    | stage | arithmetic |
    """
    benches = sorted({b for row in table.values() for b in row})
    lines = [f"Held-out greedy pass@1 after each stage, measured {date.today().isoformat()}.", "",
             "| stage | " + " | ".join(benches) + " |", "|---" * (len(benches) + 1) + "|"]
    lines += [f"| {stage} | " + " | ".join(f"{row.get(b, float('nan')):.3f}" for b in benches) + " |"
              for stage, row in table.items()]
    if timings:
        lines += ["", "Wall time this run: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())]
    return "\n".join(lines) + "\n"


def plot_stages(table: dict[str, dict[str, float]], path: Path) -> None:
    """One line per benchmark across the stages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(table)
    fig, ax = plt.subplots(figsize=(6, 4))
    for bench in sorted({b for row in table.values() for b in row}):
        ax.plot(stages, [table[s].get(bench) for s in stages], marker="o", label=bench)
    ax.set_xlabel("stage")
    ax.set_ylabel("held-out pass@1 (greedy)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
