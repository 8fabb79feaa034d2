"""Write an evaluation's outputs: `results.json`, `report.md` (checkpoint x benchmark tables) and `plot.png`.

The plot is a curve over training steps when every model is a `checkpoint-<step>` directory (one line per run
and benchmark), otherwise grouped bars (one group per benchmark, one bar per checkpoint).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from eval.scoring import Result
from posttrain.files import replacing, write_atomic

_STEP = re.compile(r"checkpoint-(\d+)$")


def checkpoint_step(path: str | Path) -> int | None:
    """The training step of a `checkpoint-<step>` directory, else None.

    >>> checkpoint_step("runs/grpo/checkpoint-200"), checkpoint_step("runs/grpo")
    (200, None)
    """
    found = _STEP.search(Path(path).name)
    return int(found.group(1)) if found else None


def model_labels(models: Sequence[str]) -> dict[str, str]:
    """Short display names: the directory name when those are unique, else the paths as given.

    >>> model_labels(["runs/a/final", "runs/b/final"])
    {'runs/a/final': 'runs/a/final', 'runs/b/final': 'runs/b/final'}
    >>> model_labels(["runs/a/checkpoint-10", "runs/a/checkpoint-20"])
    {'runs/a/checkpoint-10': 'checkpoint-10', 'runs/a/checkpoint-20': 'checkpoint-20'}
    """
    models = list(dict.fromkeys(models))
    names = [Path(m).name or m for m in models]
    unique = len(set(names)) == len(names)
    return {m: (name if unique else m) for m, name in zip(models, names, strict=True)}


def headline_metrics(results: Sequence[Result]) -> list[str]:
    """The metrics the tables and plot show: every pass@k, then every maj@k, in order of k.

    >>> r = Result("m", "b", {"pass@8": 0.5, "pass@1": 0.2, "maj@8": 0.4, "mean_reward": 0.2}, [])
    >>> headline_metrics([r])
    ['pass@1', 'pass@8', 'maj@8']
    """
    keys = {key for r in results for key in r.metrics if key.startswith(("pass@", "maj@"))}
    return sorted(keys, key=lambda key: (key.startswith("maj@"), int(key.partition("@")[2])))


def _percent(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown_report(results: Sequence[Result], config: dict[str, Any]) -> str:
    """`report.md`: one checkpoint x benchmark table per headline metric (percent), then per-run details."""
    labels = model_labels([r.model for r in results])
    benchmarks = list(dict.fromkeys(r.benchmark for r in results))
    by_key = {(r.model, r.benchmark): r for r in results}
    settings = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in config.items() if v is not None)
    lines = ["# Evaluation report", "", f"Settings: {settings}", ""]
    for metric in headline_metrics(results):
        lines += [f"## {metric} (%)", "", "| checkpoint | " + " | ".join(benchmarks) + " |"]
        lines.append("|---" * (len(benchmarks) + 1) + "|")
        for model, label in labels.items():
            cells = [_percent(by_key[model, b].metrics.get(metric) if (model, b) in by_key else None)
                     for b in benchmarks]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Details",
        "",
        "| checkpoint | benchmark | problems | samples | mean reward | mean response tokens | truncated (%) "
        "| unscored |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.metrics
        reward = "–" if m["mean_reward"] is None else f"{m['mean_reward']:.3f}"
        tokens = "–" if m["mean_response_tokens"] is None else f"{m['mean_response_tokens']:.1f}"
        lines.append(
            f"| {labels[r.model]} | {r.benchmark} | {m['num_problems']} | {m['num_samples']} | {reward} | "
            f"{tokens} | {_percent(m.get('truncated'))} | {m['unscored']} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: Sequence[Result], path: Path) -> str:
    """`plot.png`: the first headline metric as a curve over steps or as grouped bars (see module docstring);
    returns which, "curve" or "bars"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = headline_metrics(results)
    metric = metrics[0] if metrics else "mean_reward"
    labels = model_labels([r.model for r in results])
    models = list(labels)
    benchmarks = list(dict.fromkeys(r.benchmark for r in results))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(benchmarks) * max(1, len(models)) ** 0.5), 4.0))
    kind = "curve" if len(models) > 1 and all(r.step is not None for r in results) else "bars"
    if kind == "curve":
        runs = list(dict.fromkeys(str(Path(m).parent) for m in models))
        for run in runs:
            for bench in benchmarks:
                points = sorted(
                    (r.step, r.metrics.get(metric)) for r in results
                    if r.benchmark == bench and str(Path(r.model).parent) == run
                )
                xs = [s for s, v in points if v is not None]
                ys = [100 * v for _, v in points if v is not None]
                ax.plot(xs, ys, marker="o", label=bench if len(runs) == 1 else f"{run}: {bench}")
        ax.set_xlabel("training step")
    else:
        width = 0.8 / len(models)
        by_key = {(r.model, r.benchmark): r.metrics.get(metric) for r in results}
        for i, model in enumerate(models):
            xs = [b + (i - (len(models) - 1) / 2) * width for b in range(len(benchmarks))]
            ys = [100 * (by_key.get((model, bench)) or 0.0) for bench in benchmarks]
            ax.bar(xs, ys, width=width, label=labels[model])
        ax.set_xticks(range(len(benchmarks)), benchmarks)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return kind


def write_results(results: Sequence[Result], config: dict[str, Any], output_dir: Path) -> Path:
    """Write `results.json` (settings, then per checkpoint and benchmark: metrics and sample records)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "results.json"
    payload = {"config": config, "results": [asdict(r) for r in results]}
    write_atomic(path, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    return path


def write_report(results: Sequence[Result], config: dict[str, Any], output_dir: Path) -> None:
    """Write `results.json`, `report.md` and `plot.png` into `output_dir`."""
    write_results(results, config, output_dir)
    write_atomic(output_dir / "report.md", markdown_report(results, config))
    plot(results, output_dir / "plot.png")
