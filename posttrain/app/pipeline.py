"""The main job: chain recipe stages (SFT -> distillation -> GRPO), evaluating after each one.

A pipeline YAML names its stages in order; each runs its own recipe as users would (`accelerate launch
recipes/<stage>.py --config ...`) with overrides in which `{output_dir}` is the pipeline's output dir and
`{<stage>}` is an earlier stage's final checkpoint. A stage is complete when its `final/` checkpoint exists (it is
written atomically), so rerunning skips finished stages and a killed stage resumes from its last complete
checkpoint; `from_stage` reruns from one stage on.

>>> config = load_pipeline_config("recipes/configs/tiny/pipeline.yaml")
>>> [stage.name for stage in config.stages]
['sft', 'reasoner', 'distill', 'reward_model', 'grpo', 'mtp_refresh']
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
    targets: list[str] = field(default_factory=list)  # benchmarks the stage is meant to raise (marked in the table)

    def start(self) -> str | None:
        """The earlier stage this one trains from (its `model_name_or_path` is `{stage}`), else None."""
        value = str(self.args.get("model_name_or_path", ""))
        return value[1:-1] if value.startswith("{") and value.endswith("}") else None


@dataclass
class EvalSettings:
    """What `eval.evaluate` runs after each stage (greedy pass@1 on held-out sets by default)."""

    benchmarks: list[str] = field(default_factory=lambda: ["arithmetic"])
    limit: int | None = 200
    max_new_tokens: int = 192
    batch_size: int = 64
    # the last evaluated stage also samples its targets: pass@k and maj@k with k = final_samples (0: greedy only)
    final_samples: int = 0
    final_temperature: float = 0.7


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
    for i, stage in enumerate(stages):
        unknown = sorted(set(stage.targets) - set(settings.benchmarks))
        if unknown:
            raise UserError(f"{path}: stages[{i}].targets: {unknown} are not among eval.benchmarks "
                            f"{settings.benchmarks}")
    return from_mapping(PipelineConfig, {**raw, "stages": stages, "eval": settings,
                                         "output_dir": output_dir or raw["output_dir"]}, str(path))


def stage_dir(config: PipelineConfig, stage: Stage) -> Path:
    """Where a stage writes: its `output_dir` override, else `<output_dir>/<stage>`."""
    return Path(_fill(str(stage.args.get("output_dir", f"{{output_dir}}/{stage.name}")), config))


def _fill(value: Any, config: PipelineConfig) -> Any:
    if isinstance(value, list):
        return [_fill(v, config) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, config) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    names = {"output_dir": config.output_dir}
    names |= {s.name: str(Path(config.output_dir) / s.name / FINAL_DIR) for s in config.stages}
    for name, path in names.items():  # other braces stay: YAML flow mappings in overrides, JSON
        value = value.replace(f"{{{name}}}", path)
    return value


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

    evals: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    evaluated = [s.name for s in config.stages if s.evaluate]
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
        last = stage.name == evaluated[-1]
        cached = out / "eval" / f"{stage.name}.json"
        record = json.loads(cached.read_text()) if cached.is_file() else {}
        if "correct" not in record or (last and config.eval.final_samples and "sampled" not in record):
            start = time.perf_counter()
            sampled = (stage.targets or config.eval.benchmarks) if last else []
            record = evaluate_stage(config, final, out / "eval" / stage.name, sampled)
            write_atomic(cached, json.dumps(record))
            timings[f"eval:{stage.name}"] = time.perf_counter() - start
        evals[stage.name] = record
        log(f"[pipeline] {stage.name}: " + ", ".join(f"{b} {v:.3f}" for b, v in evals[stage.name]["pass@1"].items()))
    write_atomic(out / "results.md", results_markdown(config, evals, timings))
    table = {name: record["pass@1"] for name, record in evals.items()}
    plot_stages(table, out / "stages.png")
    log((out / "results.md").read_text())
    return table


def evaluate_stage(config: PipelineConfig, model: Path, output_dir: Path, sampled: list[str]) -> dict[str, Any]:
    """Greedy pass@1 per benchmark with each problem's verdict (for paired comparisons between stages); on the
    `sampled` benchmarks also pass@k and maj@k over `final_samples` samples at `final_temperature`."""
    import eval as evaluation

    settings = config.eval
    common = {"limit": settings.limit, "max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size}
    results = evaluation.evaluate([model], settings.benchmarks, output_dir=output_dir, **common)
    record: dict[str, Any] = {
        "pass@1": {r.benchmark: r.metrics["pass@1"] for r in results},
        "correct": {r.benchmark: [int(s["correct"]) for s in sorted(r.samples, key=lambda s: s["problem"])]
                    for r in results},
    }
    if sampled and settings.final_samples:
        k = settings.final_samples
        results = evaluation.evaluate([model], sampled, num_samples=k, k=[1, k],
                                      temperature=settings.final_temperature, output_dir=output_dir / "sampled",
                                      **common)
        record["sampled"] = {r.benchmark: {m: r.metrics[m] for m in (f"pass@{k}", f"maj@{k}", "pass@1")}
                             for r in results}
    return record


def stage_gains(config: PipelineConfig, evals: dict[str, dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """{stage: {benchmark: (change of greedy pass@1 from the stage it trains from, paired standard error)}}."""
    from eval.metrics import paired_difference

    gains = {}
    for stage in config.stages:
        start = stage.start()
        if stage.name not in evals or start not in evals:
            continue
        now, before = evals[stage.name]["correct"], evals[start]["correct"]
        gains[stage.name] = {b: paired_difference(list(zip(now[b], before[b], strict=True)))
                             for b in now if b in before}
    return gains


def results_markdown(config: PipelineConfig, evals: dict[str, dict[str, Any]],
                     timings: dict[str, float] | None = None) -> str:
    """The stage x benchmark table of greedy pass@1 on the held-out sets, with each stage's change from the stage it
    trains from (paired standard error; targeted benchmarks in bold), the last stage's pass@k and maj@k, dated.

    >>> config = PipelineConfig("out", [Stage("sft", "sft.py", "sft.yaml"),
    ...                                 Stage("rl", "grpo.py", "grpo.yaml", {"model_name_or_path": "{sft}"},
    ...                                       targets=["math"])])
    >>> evals = {"sft": {"pass@1": {"math": 0.5}, "correct": {"math": [1, 0]}},
    ...          "rl": {"pass@1": {"math": 1.0}, "correct": {"math": [1, 1]}}}
    >>> print("\\n".join(results_markdown(config, evals).splitlines()[2:6]))
    | stage | from | math (n=2) |
    |---|---|---|
    | sft | - | 0.500 |
    | rl | sft | **1.000 (+0.500 ± 0.500)** |
    """
    from eval.metrics import binomial_se

    gains = stage_gains(config, evals)
    stages = {s.name: s for s in config.stages}
    benches = sorted({b for row in evals.values() for b in row["pass@1"]})
    n = {b: len(next(row["correct"][b] for row in evals.values() if b in row["correct"])) for b in benches}
    lines = [f"Held-out greedy pass@1 after each stage, measured {date.today().isoformat()}; in brackets the change "
             "from the stage it trains from and its paired standard error; bold: the benchmarks the stage targets.",
             "", "| stage | from | " + " | ".join(f"{b} (n={n[b]})" for b in benches) + " |",
             "|---" * (len(benches) + 2) + "|"]
    for name, row in evals.items():
        cells = []
        for b in benches:
            value = row["pass@1"].get(b, float("nan"))
            cell = f"{value:.3f}"
            if b in gains.get(name, {}):
                change, se = gains[name][b]
                cell += f" ({change:+.3f} ± {se:.3f})"
            cells.append(f"**{cell}**" if b in stages[name].targets else cell)
        lines.append(f"| {name} | {stages[name].start() or '-'} | " + " | ".join(cells) + " |")
    last = next(reversed(evals), None)
    if last and "sampled" in evals[last]:
        sampled = evals[last]["sampled"]
        metrics = list(next(iter(sampled.values())))
        lines += ["", f"{last}, {config.eval.final_samples} samples per problem at temperature "
                  f"{config.eval.final_temperature}:", "", "| benchmark | " + " | ".join(metrics) + " |",
                  "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {b} | " + " | ".join(f"{v[m]:.3f}" for m in metrics) + " |" for b, v in sampled.items()]
    worst = {b: binomial_se(0.5, n[b]) for b in benches}
    lines += ["", "Standard error of one pass rate p on n problems: sqrt(p(1-p)/n), at most "
              + ", ".join(f"{worst[b]:.3f} ({b})" for b in benches) + "."]
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
