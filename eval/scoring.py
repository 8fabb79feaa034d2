"""Score completions for a benchmark with the rewards package (the verifiers GRPO trains against).

`score` needs no model: give it one list of completions per benchmark row and it returns the per-sample records
and the aggregate metrics. `eval.evaluate` calls it after generating; tests call it with reference answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rewards import get_reward

from eval.benchmarks import Benchmark
from posttrain.generation import Completion
from eval.metrics import aggregate, is_correct



@dataclass
class Result:
    """One checkpoint on one benchmark: aggregate `metrics` and one record per sample in `samples`."""

    model: str
    benchmark: str
    metrics: dict[str, float | int | None]
    samples: list[dict[str, Any]] = field(repr=False)
    step: int | None = None


@lru_cache(maxsize=None)
def _reward(spec: str) -> Any:
    # One instance per spec and process: the math reward keeps a pool of verifier processes warm.
    return get_reward(spec)


def score(
    benchmark: Benchmark,
    completions: Sequence[Sequence[str | Completion]],
    ks: Sequence[int] = (1,),
    model: str = "given",
    step: int | None = None,
) -> Result:
    """Score `completions[i]` (the samples for row i, as strings or `Completion`s) with the benchmark's reward.

    >>> from eval.benchmarks import Benchmark
    >>> bench = Benchmark("toy", "math", [{"id": 0, "prompt": "1+1?", "solution": "2"}], "doctest")
    >>> result = score(bench, [["\\\\boxed{2}", "\\\\boxed{3}"]], ks=[1, 2])
    >>> result.metrics["pass@1"], result.metrics["pass@2"], result.metrics["maj@1"]
    (0.5, 1.0, 0.5)
    """
    if len(completions) != len(benchmark.rows):
        raise ValueError(f"{benchmark.name}: {len(completions)} completion lists for {len(benchmark.rows)} rows")
    n = len(completions[0]) if completions else 0
    if n == 0 or any(len(c) != n for c in completions):
        raise ValueError(f"{benchmark.name}: every row needs the same number (>= 1) of completions")
    texts = [c.text if isinstance(c, Completion) else c for per_row in completions for c in per_row]
    columns = {name: [v for v in values for _ in range(n)] for name, values in benchmark.columns().items()}
    prompts = [row["prompt"] for row in benchmark.rows for _ in range(n)]
    rewards = _reward(benchmark.reward)(prompts=prompts, completions=texts, **columns)
    # The majority vote counts the answers the reward itself reads; rewards that read none (code) get no maj@k.
    reader = getattr(_reward(benchmark.reward), "final_answers", None)
    answers = reader(texts) if reader else [None] * len(texts)

    samples = []
    for flat, (text, reward, answer) in enumerate(zip(texts, rewards, answers, strict=True)):
        row, completion = benchmark.rows[flat // n], completions[flat // n][flat % n]
        samples.append(
            {
                "problem": flat // n,
                "id": row.get("id"),
                "sample": flat % n,
                "prompt": row["prompt"],
                "completion": text,
                "reward": reward,
                "correct": is_correct(reward),
                "answer": answer,
                "solution": row.get("solution"),
                "response_tokens": completion.num_tokens if isinstance(completion, Completion) else None,
                "truncated": completion.truncated if isinstance(completion, Completion) else None,
            }
        )

    def per_problem(key: str) -> list[list[Any]]:
        return [[s[key] for s in samples[i * n : (i + 1) * n]] for i in range(len(benchmark.rows))]

    metrics = aggregate(
        per_problem("reward"),
        ks,
        answers=per_problem("answer") if reader else None,
        lengths=per_problem("response_tokens"),
    )
    truncated = [s["truncated"] for s in samples if s["truncated"] is not None]
    metrics["truncated"] = sum(truncated) / len(truncated) if truncated else None
    return Result(model=model, benchmark=benchmark.name, metrics=metrics, samples=samples, step=step)
