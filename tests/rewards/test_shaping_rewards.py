import math

import pytest

from rewards import get_reward


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>\n6 times 7 is 42.\n</think>\nThe answer is 42.", 1.0),
        ("<think>reasoning</think>", 0.75),  # no answer after the reasoning
        ("<think>reasoning</think> 42 <think>again</think> 43", 0.5),  # two of each tag
        ("<think>reasoning never closed", 0.25),
        ("The answer is 42.", 0.0),
        ("preamble <think>reasoning</think> 42", 0.75),  # does not open with <think>
        ("", 0.0),
    ],
)
def test_format_gives_quarter_credit_per_check(completion, expected):
    assert get_reward("format")(completions=[completion]) == [expected]


def test_format_with_think_opened_by_the_prompt():
    reward = get_reward({"name": "format", "think_in_prompt": True})
    assert reward(completions=["reasoning</think> 42", "<think>reasoning</think> 42"]) == [1.0, 0.75]


def test_length_rewards_short_correct_and_long_wrong_answers_most():
    reward = get_reward({"name": "length", "max_len": 100})
    correct = [" ".join(["w"] * n) + r" \boxed{7}" for n in (9, 49, 99, 199)]
    scores = reward(completions=correct + [r"\boxed{8}", "w " * 99 + r"\boxed{8}"], solution=["7"] * 6)
    assert scores[:4] == sorted(scores[:4], reverse=True)
    assert scores[1] == pytest.approx(0.75) and scores[3] == pytest.approx(0.5)  # clamped past max_len
    assert scores[4] == pytest.approx(-1 + 0.25 * (1 - math.cos(math.pi / 100)))
    assert scores[5] == pytest.approx(-0.5)


def test_length_counts_completion_ids_when_the_trainer_passes_them():
    reward = get_reward({"name": "length", "max_len": 10})
    assert reward(completions=[r"\boxed{1}"] * 2, solution=["1"] * 2, completion_ids=[[0] * 5, [0] * 10]) == [0.75, 0.5]


def test_length_leaves_rows_without_gold_unscored():
    assert get_reward("length")(completions=["42"], solution=[None]) == [None]


def test_overlong_penalty_alone_needs_no_solution():
    reward = get_reward({"name": "length", "cosine": False, "max_len": 100, "overlong_cache": 20})
    assert reward.required_columns == ()
    assert reward(completions=["x"], completion_ids=[[0] * 80]) == [0.0]
    assert reward(completions=["x"] * 3, completion_ids=[[0] * 81, [0] * 90, [0] * 101]) == [-0.05, -0.5, -1.0]


def test_overlong_penalty_adds_to_the_cosine_term():
    reward = get_reward({"name": "length", "max_len": 10, "overlong_cache": 4})
    cosine, overlong = 0.5 + 0.25 * (1 + math.cos(0.8 * math.pi)), (6 - 8) / 4
    scores = reward(completions=[r"\boxed{1}"], solution=["1"], completion_ids=[[0] * 8])
    assert scores == [pytest.approx(cosine + overlong)]


@pytest.mark.parametrize(
    ("params", "message"),
    [({"max_len": 0}, "max_len > 0"), ({"overlong_cache": 2000}, "overlong_cache <= max_len"),
     ({"cosine": False}, "set overlong_cache > 0")],
)
def test_length_rejects_bad_options_with_the_fix(params, message):
    with pytest.raises(ValueError, match=message):
        get_reward({"name": "length", **params})


def test_repetition_penalises_repeated_ngrams():
    reward = get_reward({"name": "repetition", "ngram_size": 2, "max_penalty": -1.0})
    assert reward(completions=["the cat sat on the mat", "go go go go go", "hi"]) == [0.0, -0.75, 0.0]
    assert reward(completions=["ignored"], completion_ids=[[1, 2, 1, 2, 1, 2]]) == [pytest.approx(-0.6)]


def test_repetition_rejects_a_positive_penalty():
    with pytest.raises(ValueError, match="max_penalty <= 0"):
        get_reward({"name": "repetition", "max_penalty": 0.5})
