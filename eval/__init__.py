"""Evaluation: score checkpoints on math and code benchmarks with the rewards package's verifiers.

Public API:

- `evaluate(model_paths, benchmarks, num_samples, k, limit, output_dir, ...) -> list[Result]`: generate, score,
  and (with `output_dir`) write results.json, report.md and plot.png. The CLI `python eval/run.py` wraps it.
- `score(benchmark, completions, ks) -> Result`: score given completions, no model needed.
- `load_benchmark(spec, prompt_template, limit) -> Benchmark` and `known_benchmarks()`.
- `pass_at_k(n, c, k)`, `maj_at_k(answers, rewards, k)`: the metrics.

>>> from eval import load_benchmark, score
>>> bench = load_benchmark("humaneval", limit=1)
>>> score(bench, [[bench.rows[0]["reference"]]]).metrics["pass@1"]
1.0
"""

from eval.benchmarks import Benchmark, known_benchmarks, load_benchmark
from eval.harness import evaluate
from eval.metrics import maj_at_k, pass_at_k
from eval.scoring import Result, score

__all__ = [
    "Benchmark",
    "Result",
    "evaluate",
    "known_benchmarks",
    "load_benchmark",
    "maj_at_k",
    "pass_at_k",
    "score",
]
