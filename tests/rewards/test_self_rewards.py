"""Self-rewarding without gold: `vote` (majority answer of a prompt's group) and `self_judge` (the live policy grades
its own completions against a constitution), on real tiny models built here."""

from __future__ import annotations

import pytest
import torch

from posttrain.generation import encode_prompts
from posttrain.model import load_model
from posttrain.tokenizer import build_tokenizer
from rewards import bind_policy, get_reward

pytestmark = pytest.mark.integration


def test_vote_groups_by_prompt_as_trl_lays_them_out():
    # num_generations=4, two prompts: TRL passes each prompt's completions side by side, every column repeated.
    vote = get_reward("vote")
    prompts = [[{"role": "user", "content": "2+2?"}]] * 4 + [[{"role": "user", "content": "3+3?"}]] * 4
    completions = [[{"role": "assistant", "content": t}] for t in (
        r"\boxed{4}", "The answer is 4.0", r"\boxed{5}", "no idea",  # 4 wins 2 of 4; "no idea" disagrees
        r"\boxed{6}", r"\boxed{7}", r"\boxed{6}", r"\boxed{7}",  # a tie: no label, no signal
    )]
    logged = {}
    scores = vote(prompts=prompts, completions=completions, log_metric=logged.__setitem__)
    assert scores == [1.0, 1.0, 0.0, 0.0, None, None, None, None]
    assert logged == {"vote/share": 0.5, "vote/labelled": 0.5, "rewards/vote/failure_rate": 0.0}
    assert vote.failures == 0


def test_vote_reads_no_gold_but_reports_the_pseudo_labels_accuracy():
    vote = get_reward("vote")
    prompts = ["2+2?"] * 3 + ["3+3?"] * 3
    completions = [r"\boxed{4}", r"\boxed{4}", r"\boxed{5}", r"\boxed{7}", r"\boxed{7}", r"\boxed{6}"]
    with_gold = vote(prompts=prompts, completions=completions, solution=["4"] * 3 + ["6"] * 3)
    assert vote.last["label_accuracy"] == 0.5  # 4 is right, 7 is not: the wrong majority is still rewarded
    assert with_gold == vote(prompts=prompts, completions=completions) == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    assert "label_accuracy" not in vote.last


def test_vote_unlabelled_only_leaves_labelled_prompts_to_the_rule_reward():
    """Beside `math` in one GRPO run (`unlabeled_tasks`): prompts with a solution score None, the others vote."""
    vote = get_reward({"name": "vote", "unlabelled_only": True})
    prompts = ["2+2?"] * 3 + ["3+3?"] * 3
    completions = [r"\boxed{4}", r"\boxed{4}", r"\boxed{5}", r"\boxed{7}", r"\boxed{7}", r"\boxed{6}"]
    scores = vote(prompts=prompts, completions=completions, solution=["4"] * 3 + [None] * 3)
    assert scores == [None, None, None, 1.0, 1.0, 0.0]
    assert vote.last == {"share": 2 / 3, "labelled": 1.0}


def test_vote_min_share_and_groups_without_answers():
    vote = get_reward({"name": "vote", "min_share": 0.6})
    scores = vote(prompts=["a"] * 3 + ["b"] * 2,
                  completions=[r"\boxed{1}", r"\boxed{1}", r"\boxed{2}", "words", "more words that say nothing"])
    assert scores == [1.0, 1.0, 0.0, None, None]
    with pytest.raises(ValueError, match="min_share"):
        get_reward({"name": "vote", "min_share": 2})


def overfit(model, tokenizer, question: str, reply: str, steps: int = 60) -> None:
    """Teach a tiny model to answer `question` (as its chat prompt) with `reply`: a real model with a known answer."""
    prompt = encode_prompts(tokenizer, [question])[0]
    target = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + target])
    labels = torch.tensor([[-100] * len(prompt) + target])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()


@pytest.fixture
def judge_and_policy():
    torch.manual_seed(0)
    model, tokenizer = load_model("tiny", mtp_loss_weight=0.0), build_tokenizer()
    reward = get_reward({"name": "self_judge", "votes": 3, "temperature": 0.1, "max_new_tokens": 8,
                         "constitution": "Be right.", "rubric": "{constitution} Q: {prompt} A: {completion}"})
    return reward, model, tokenizer


def test_self_judge_grades_with_the_live_weights_not_a_copy(judge_and_policy):
    reward, model, tokenizer = judge_and_policy
    question = "Be right. Q: 2+2? A: 4"
    overfit(model, tokenizer, question, "Score: 8")
    bind_policy([reward, get_reward("math")], model, tokenizer)
    assert reward(prompts=["2+2?"], completions=["4"]) == [pytest.approx(0.8)]
    assert model.training  # its mode is restored for the trainer
    overfit(model, tokenizer, question, "Score: 3")  # training moves the weights: the judge moves with them
    assert reward(prompts=["2+2?"], completions=["4"]) == [pytest.approx(0.3)]
    assert reward.failures == 0


def test_self_judge_counts_unparseable_votes_and_keeps_the_trainers_random_state(judge_and_policy):
    reward, model, tokenizer = judge_and_policy  # random weights: no vote states a score
    reward.bind_policy(model, tokenizer)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    scores = reward(prompts=["2+2?", "3+3?"], completions=["4", "6"])
    assert torch.equal(torch.rand(3), before)  # judging did not reseed or consume the trainer's RNG
    assert scores == [None, None] and reward.unparseable == 6 and reward.failures == 2


def test_self_judge_without_a_policy_fails_rows_not_training():
    reward = get_reward("self_judge")
    assert reward(prompts=["q"], completions=["a"]) == [None]
    assert "no policy" in reward.stats.first_error


@pytest.mark.parametrize(("params", "message"), [
    ({"votes": 4, "temperature": 0.0}, "needs temperature > 0"),
    ({"rubric": "{prompt} only"}, r"\{completion\}"),
    ({"votes": 0}, ">= 1"),
])
def test_self_judge_rejects_bad_options(params: dict, message: str):
    with pytest.raises(ValueError, match=message):
        get_reward({"name": "self_judge", **params})


def test_self_judge_rubric_columns_are_required():
    reward = get_reward({"name": "self_judge", "rubric": "{prompt} {completion} gold: {solution}"})
    assert reward.required_columns == ("solution",)
