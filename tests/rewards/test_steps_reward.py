import pytest

from data_tools.generators.registry import prompt_dataset
from rewards import check_columns, get_reward

REF = "<think>\n8+6=14, write 4 carry 1\n7+5+1=13, write 3 carry 1\n4+0+1=5, write 5\n</think>\nThe answer is \\boxed{534}."


def score(completion, reference=REF):
    return get_reward("steps")(completions=[completion], reference=[reference])[0]


def test_reproducing_the_reference_working_scores_one_whatever_the_answer_line():
    assert score("<think>\n8+6=14, write 4 carry 1\n 7+5+1=13, write 3 carry 1\n\n4+0+1=5, write 5</think> 534") == 1.0


def test_each_wrong_or_missing_step_costs_its_share():
    one_slip = "<think>\n8+6=14, write 4 carry 1\n7+5+1=12, write 2 carry 1\n4+0+1=5, write 5\n</think>"
    assert score(one_slip) == pytest.approx(2 / 3)
    assert score("<think>\n8+6=14, write 4 carry 1\n</think>") == pytest.approx(1 / 3)
    assert score("The answer is 534.") == 0.0


def test_padding_the_working_with_extra_lines_does_not_pay():
    padded = REF.replace("</think>", "8+6=14, write 4 carry 1\n4+0+1=5, write 5\n7+5+1=13, write 3 carry 1\n</think>")
    assert score(padded) == pytest.approx(3 / 6)


def test_steps_out_of_order_count_only_as_a_common_subsequence():
    swapped = "<think>\n7+5+1=13, write 3 carry 1\n8+6=14, write 4 carry 1\n4+0+1=5, write 5\n</think>"
    assert score(swapped) == pytest.approx(2 / 3)


def test_a_row_without_a_reference_is_not_scored():
    assert score(REF, reference=None) is None
    assert score(REF, reference="<think>\n</think> 534") is None


def test_builtin_prompts_carry_their_worked_reference():
    rows = prompt_dataset("arithmetic", 5, split="train")
    check_columns([get_reward("steps")], rows.column_names, rows=rows)
    reward = get_reward("steps")
    assert reward(completions=rows["reference"], reference=rows["reference"]) == [1.0] * 5


def test_a_malformed_reference_is_named_with_its_row():
    with pytest.raises(ValueError, match=r"reward 'steps': column 'reference' in row 1 is 7"):
        check_columns([get_reward("steps")], ["reference"], rows=[{"reference": REF}, {"reference": 7}])
    with pytest.raises(ValueError, match=r"reward 'steps' needs column 'reference'"):
        check_columns([get_reward("steps")], ["prompt", "solution"])
