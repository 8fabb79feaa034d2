"""Per-problem metrics over the n samples drawn for one prompt, and their means over a benchmark.

A sample is *correct* when its reward is at least 1.0 (the builtin `math` and `code` rewards give 1.0 for a
verified answer / all tests passing). A reward of None means the verifier could not score the sample: it counts
as not correct, and `aggregate` reports how many there were.

- pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code",
  eq. 1): with n samples of which c are correct, ``1 - C(n-c, k) / C(n, k)``, the probability that at least one
  of k samples drawn without replacement from the n is correct.
- maj@k: majority vote (self-consistency, Wang et al. 2022) over the extracted answers of k samples; the vote is
  correct when a sample carrying the winning answer is. The n samples are cut into n // k consecutive groups of
  k and the votes averaged, so every sample counts and maj@1 equals the mean accuracy.
- Comparisons: the binomial standard error of a pass rate, and the paired difference of two models on the same
  problems with its standard error (smaller than either rate's when the models agree on most problems).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from statistics import mean

CORRECT = 1.0


def is_correct(reward: float | None) -> bool:
    """Whether one sample's reward counts as solved.

    >>> is_correct(1.0), is_correct(0.5), is_correct(None)
    (True, False, False)
    """
    return reward is not None and reward >= CORRECT


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct, as a numerically stable product.

    >>> pass_at_k(n=2, c=1, k=1)
    0.5
    >>> pass_at_k(n=5, c=0, k=3), pass_at_k(n=5, c=3, k=3)
    (0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def maj_at_k(answers: Sequence[Hashable | None], rewards: Sequence[float | None], k: int) -> float:
    """maj@k for one problem: the mean, over consecutive groups of k samples, of whether the vote is correct.

    `answers[i]` is sample i's extracted answer (None when nothing could be extracted: it does not vote). Ties go
    to the answer seen first. A group where no sample has an answer counts as wrong.

    >>> maj_at_k(["4", "5", "4"], [1.0, 0.0, 1.0], k=3)
    1.0
    >>> maj_at_k(["5", "5", "4", "4"], [0.0, 0.0, 1.0, 1.0], k=2)  # group ["5","5"] wrong, ["4","4"] right
    0.5
    """
    if len(answers) != len(rewards):
        raise ValueError(f"{len(answers)} answers but {len(rewards)} rewards")
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj@k needs 1 <= k <= number of samples ({len(answers)}), got k={k}")
    votes = []
    for start in range(0, len(answers) - k + 1, k):
        group = [(a, r) for a, r in zip(answers[start : start + k], rewards[start : start + k]) if a is not None]
        if not group:
            votes.append(0.0)
            continue
        counts = Counter(a for a, _ in group)  # insertion order = first occurrence, so ties go to the earliest
        winner = max(counts, key=counts.__getitem__)
        votes.append(float(is_correct(next(r for a, r in group if a == winner))))
    return mean(votes)


def aggregate(
    rewards: Sequence[Sequence[float | None]],
    ks: Sequence[int],
    answers: Sequence[Sequence[Hashable | None]] | None = None,
    lengths: Sequence[Sequence[int | None]] | None = None,
) -> dict[str, float | int | None]:
    """Benchmark-level metrics from per-problem lists of per-sample values.

    Returns pass@k for every k <= samples per problem, maj@k likewise when `answers` are given, the mean reward
    (None rewards left out), the mean response length in tokens when `lengths` are known, and counts.

    >>> m = aggregate([[1.0, 0.0], [0.0, None]], ks=[1, 2], answers=[["4", "5"], [None, None]])
    >>> m["pass@1"], m["pass@2"], m["maj@1"], m["maj@2"], m["unscored"]
    (0.25, 0.5, 0.25, 0.5, 1)
    """
    if not rewards:
        raise ValueError("no problems to aggregate")
    n = len(rewards[0])
    if any(len(r) != n for r in rewards):
        raise ValueError("every problem needs the same number of samples")
    ks = sorted(k for k in set(ks) if k <= n)
    flat = [r for per_problem in rewards for r in per_problem]
    scored = [r for r in flat if r is not None]
    metrics: dict[str, float | int | None] = {}
    for k in ks:
        metrics[f"pass@{k}"] = mean(pass_at_k(n, sum(map(is_correct, per)), k) for per in rewards)
    if answers is not None:
        for k in ks:
            metrics[f"maj@{k}"] = mean(maj_at_k(a, r, k) for a, r in zip(answers, rewards, strict=True))
    metrics["mean_reward"] = mean(scored) if scored else None
    known = [t for per in lengths or [] for t in per if t is not None]
    metrics["mean_response_tokens"] = mean(known) if known else None
    metrics.update(num_problems=len(rewards), num_samples=len(flat), unscored=len(flat) - len(scored))
    return metrics


def paired_difference(pairs: Sequence[tuple[bool, bool]]) -> tuple[float, float]:
    """Mean of (a - b) over paired outcomes (the same problems, two models) and its standard error.

    >>> mean, se = paired_difference([(True, False), (True, True), (False, False), (True, False)])
    >>> mean, round(se, 4)
    (0.5, 0.2887)
    """
    d = [float(a) - float(b) for a, b in pairs]
    avg = sum(d) / len(d)
    var = sum((x - avg) ** 2 for x in d) / (len(d) - 1) if len(d) > 1 else 0.0
    return avg, math.sqrt(var / len(d))


def binomial_se(p: float, n: int) -> float:
    """Standard error of a pass rate `p` measured on `n` problems.

    >>> round(binomial_se(0.5, 100), 3)
    0.05
    """
    return math.sqrt(p * (1 - p) / n) if n else float("nan")
