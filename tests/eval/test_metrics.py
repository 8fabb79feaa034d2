"""pass@k against brute-force enumeration; maj@k and aggregation on constructed samples."""

from __future__ import annotations

import itertools

import pytest

from eval.metrics import aggregate, maj_at_k, pass_at_k


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_the_fraction_of_k_subsets_holding_a_correct_sample(n: int) -> None:
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_rejects_k_above_the_sample_count() -> None:
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(n=4, c=1, k=5)


def test_majority_answer_decides_even_when_a_minority_sample_is_right() -> None:
    assert maj_at_k(["7", "7", "7", "8"], [0.0, 0.0, 0.0, 1.0], k=4) == 0.0
    assert maj_at_k(["8", "7", "8", "8"], [1.0, 0.0, 1.0, 1.0], k=4) == 1.0


def test_majority_tie_goes_to_the_answer_seen_first() -> None:
    assert maj_at_k(["3", "4", "4", "3"], [1.0, 0.0, 0.0, 1.0], k=4) == 1.0
    assert maj_at_k(["4", "3", "3", "4"], [0.0, 1.0, 1.0, 0.0], k=4) == 0.0


def test_samples_without_an_answer_do_not_vote_and_an_empty_vote_is_wrong() -> None:
    assert maj_at_k([None, None, "5"], [0.0, 0.0, 1.0], k=3) == 1.0
    assert maj_at_k([None, None], [None, 0.0], k=2) == 0.0


def test_maj_at_k_averages_disjoint_groups_and_maj_at_1_is_accuracy() -> None:
    answers = ["1", "1", "2", "2", "2", "1"]
    rewards = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert maj_at_k(answers, rewards, k=2) == pytest.approx(1 / 3)  # groups (1,1) (2,2) (2,1): right, wrong, wrong
    assert maj_at_k(answers, rewards, k=3) == pytest.approx(1 / 2)  # (1,1,2) right, (2,2,1) wrong
    assert maj_at_k(answers, rewards, k=1) == pytest.approx(sum(rewards) / len(rewards))


def test_aggregate_counts_unscored_samples_as_wrong_and_leaves_them_out_of_the_mean_reward() -> None:
    metrics = aggregate([[1.0, None], [0.5, 0.0]], ks=[1, 2, 4], lengths=[[3, 5], [None, 4]])
    assert metrics["pass@1"] == pytest.approx(0.25)  # 0.5 is partial credit, not a pass
    assert metrics["pass@2"] == pytest.approx(0.5)
    assert "pass@4" not in metrics  # only k <= samples per problem
    assert metrics["mean_reward"] == pytest.approx(0.5)
    assert metrics["mean_response_tokens"] == pytest.approx(4.0)
    assert metrics["unscored"] == 1 and metrics["num_samples"] == 4
