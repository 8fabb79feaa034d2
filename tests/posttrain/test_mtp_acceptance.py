"""MTP draft acceptance: the teacher-forced measurement, checked against brute force and against decoding."""

from __future__ import annotations

import json

import pytest
import torch

from posttrain.app.cli import main
from posttrain.model import load_model
from posttrain.model.acceptance import draft_checks, mtp_acceptance
from posttrain.model.speculative import speculative_generate
from tests.posttrain.mtp_helpers import copy_mtp


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return copy_mtp(load_model("tiny").eval())


def test_acceptance_counts_completion_positions_and_matches_brute_force(model):
    torch.manual_seed(1)
    ids = torch.randint(10, 1000, (3, 16))
    ids[:, 8:] = ids[:, 8:9]  # repeats, so greedy repeats too now and then
    attn = torch.ones_like(ids)
    attn[2, 12:] = 0  # right padding
    comp = torch.zeros_like(ids)
    comp[:, 5:] = 1  # completion starts at token 5
    result = mtp_acceptance(model, ids, attn, comp)
    with torch.inference_mode():
        greedy = model(input_ids=ids, attention_mask=attn).logits.argmax(-1)
    counted = accepted = 0
    for b in range(3):
        n = int(attn[b].sum())
        for i in range(n - 2):  # t_{i+1} and t_{i+2} real completion tokens
            if comp[b, i + 1] and comp[b, i + 2]:
                counted += 1
                accepted += int(greedy[b, i] == greedy[b, i + 1])  # copy drafter: draft_i = greedy_i
    assert result.counted == counted == 2 * 10 + 6
    assert result.accepted == [accepted] and 0 < accepted < counted
    assert result.tokens_per_step == pytest.approx(1 + accepted / counted)


def test_acceptance_predicts_greedy_speculative_decoding(model):
    """Walking the teacher-forced flags over the model's own greedy output reproduces the decoder's counts."""
    prompts = [[1, 5, 6, 7, 8, 9], [1, 50, 60], [1, 300, 301, 9, 9, 9]]
    W, max_new = 6, 24
    ids = torch.full((3, W), 2)
    attn = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, W - len(p):] = torch.tensor(p)
        attn[r, W - len(p):] = 1
    out, stats = speculative_generate(model, ids, attn, max_new_tokens=max_new, eos_token_id=[3], pad_token_id=2)
    flags, _ = draft_checks(model, out, torch.cat([attn, torch.ones(3, out.shape[1] - W, dtype=torch.long)], 1))
    drafts = accepted = 0
    for r in range(3):
        gen = out[r, W:].tolist()
        n = next((j + 1 for j, t in enumerate(gen) if t == 3), len(gen))
        committed, i = 1, W - 1
        while committed < n:
            drafts += 1
            if flags[r, i, 0]:
                accepted, committed, i = accepted + 1, committed + 2, i + 2
            else:
                committed, i = committed + 1, i + 1
    assert (stats.drafts, stats.accepted) == (drafts, accepted)
    assert 0 < accepted < drafts


def test_model_without_mtp_is_refused():
    with pytest.raises(ValueError, match="no MTP module"):
        mtp_acceptance(load_model("tiny", num_nextn_predict_layers=0), torch.ones(1, 8, dtype=torch.long))


def test_cli_json(tiny_checkpoint, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "response": f"The answer is {2 * i}."}) + "\n"
                            for i in range(6)))
    assert main(["model", "mtp-acceptance", "--model", str(tiny_checkpoint), "--data", str(rows), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 6 and report["counted"] > 0
    assert 0.0 <= report["acceptance"] <= 1.0 and report["tokens_per_step"] == 1 + report["expected_accepted"]
    missing = str(tmp_path / "none.jsonl")
    assert main(["model", "mtp-acceptance", "--model", str(tiny_checkpoint), "--data", missing]) == 2
    assert "posttrain model mtp-acceptance: error: " in capsys.readouterr().err


def test_cli_on_own_greedy_completions(tiny_checkpoint, capsys):
    """On the model's own greedy text the greedy check and the text token agree: acceptance == text match."""
    assert main(["model", "mtp-acceptance", "--model", str(tiny_checkpoint), "--data", "builtin:arithmetic",
                 "--limit", "4", "--generate", "12", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["generated"] == 12 and report["rows"] == 4 and report["counted"] > 0
    assert report["acceptance"] == report["text_match"]
