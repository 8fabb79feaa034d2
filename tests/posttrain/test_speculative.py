"""Self-speculative decoding with the MTP drafter: greedy identity with `generate`, the sampling distribution."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2_contingency
from transformers import GenerationConfig

from posttrain.generation import generate
from posttrain.model import load_model
from posttrain.model.speculative import (
    SpeculativeStats,
    accept_drafts,
    speculative_generate,
)
from tests.posttrain.mtp_helpers import copy_mtp, left_pad


PROMPTS = [[1, 5, 6, 7, 8, 9, 10], [1, 50, 60], [1, 300, 301, 302, 303], [1, 77], [1, 400, 401, 9, 9, 9, 9, 9]]


def plain(model, ids, attn, max_new_tokens, **sampling):
    config = GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=2, eos_token_id=[3], **sampling)
    with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=attn, generation_config=config)


@pytest.mark.parametrize("drafter", ["random", "copy"])
def test_greedy_is_token_for_token_generate(drafter):
    """Random-init tiny model, left-padded batch of different prompt lengths; the random MTP rejects every draft,
    the copying one accepts some per row, so the masked-slot and the cropped-slot cache paths both run."""
    torch.manual_seed(0)
    model = load_model("tiny").eval()
    if drafter == "copy":
        copy_mtp(model)
    ids, attn = left_pad(PROMPTS)
    ref = plain(model, ids, attn, 40, do_sample=False)
    out, stats = speculative_generate(model, ids, attn, max_new_tokens=40, eos_token_id=[3], pad_token_id=2)
    assert out.tolist() == ref.tolist()
    assert stats.drafts > 0 and (stats.accepted == 0) == (drafter == "random")


def test_model_generate_drafts_with_mtp_when_switched_on():
    """`model.generate` as TRL's GRPOTrainer calls it: same greedy tokens, drafts counted; other calls untouched."""
    torch.manual_seed(0)
    model = load_model("tiny").eval()
    copy_mtp(model)
    ids, attn = left_pad(PROMPTS)
    ref = plain(model, ids, attn, 30, do_sample=False)
    model.speculative_generation = True
    assert plain(model, ids, attn, 30, do_sample=False).tolist() == ref.tolist()
    assert model.speculative_stats.accepted > 0
    drafts = model.speculative_stats.drafts
    plain(model, ids, attn, 30, do_sample=True, top_k=5)  # top-k: not covered, transformers' own generate
    plain(model, ids, attn, 30, do_sample=False, num_beams=2)
    assert model.speculative_stats.drafts == drafts
    sampled = plain(model, ids, attn, 30, do_sample=True, temperature=0.7, top_p=0.9, top_k=0)
    assert sampled.shape[0] == len(PROMPTS) and model.speculative_stats.drafts > drafts


def test_eval_generate_option_matches_plain(tiny_checkpoint):
    from posttrain.generation import load_checkpoint

    model, tokenizer = load_checkpoint(tiny_checkpoint, device="cpu")
    copy_mtp(model)
    prompts = [p[1:] for p in PROMPTS]
    kwargs = {"max_new_tokens": 24, "batch_size": 3}
    stats = SpeculativeStats()
    assert generate(model, tokenizer, prompts, speculative=True, stats=stats, **kwargs) == generate(
        model, tokenizer, prompts, **kwargs)
    assert stats.tokens >= stats.steps > 0


def test_no_mtp_module_is_refused():
    model = load_model("tiny", num_nextn_predict_layers=0).eval()
    with pytest.raises(ValueError, match="has none"):
        speculative_generate(model, torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3), max_new_tokens=2,
                             eos_token_id=[3])


def test_acceptance_rule_commits_the_target_distribution():
    """Exactly p: accept d ~ q with min(1, p/q), else resample from (p - q)+; an always-accept rule would give q."""
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.05, 0.4, 0.3, 0.0, 0.25])
    q = torch.tensor([0.3, 0.1, 0.3, 0.2, 0.1])
    N = 200_000
    draft = torch.multinomial(q, N, replacement=True, generator=g)
    accepted, fix = accept_drafts(draft, q.expand(N, -1), p.expand(N, -1), g)
    freq = torch.bincount(torch.where(accepted, draft, fix), minlength=5).double() / N
    assert torch.allclose(freq, p.double(), atol=4 * (0.25 / N) ** 0.5)
    assert accepted.double().mean().item() == pytest.approx(torch.minimum(p, q).sum().item(), abs=0.01)


def peaked_token_model():
    """Main model reduced to a function of the current token (every block's output zeroed) with a sharp head, and
    an MTP drafter that predicts the next distribution at a lower temperature: q differs from p, acceptance ~ 1/2."""
    torch.manual_seed(0)
    model = load_model("tiny").eval()
    n, D = model.config.num_hidden_layers, model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            for p in layer.mlp.parameters():
                p.zero_()
        mtp = model.model.layers[n]
        mtp.eh_proj.weight.zero_()
        mtp.eh_proj.weight[:, :D] = torch.eye(D)  # the embedding of t_{i+1}: q is the main model's p_{i+1}, flatter
        mtp.shared_head.norm.weight.fill_(0.6)
        model.lm_head.weight.mul_(8)
    return model


def test_sampled_output_follows_generate_distribution():
    model = peaked_token_model()
    N, new = 2000, 4
    ids, attn = left_pad([[1, 5, 6, 7]] * N)
    torch.manual_seed(1)
    out, stats = speculative_generate(model, ids, attn, max_new_tokens=new, eos_token_id=[3], temperature=1.0,
                                      top_p=0.95)
    torch.manual_seed(2)
    ref = plain(model, ids, attn, new, do_sample=True, temperature=1.0, top_p=0.95, top_k=0)
    assert 0.2 < stats.acceptance < 0.9
    W = ids.shape[1]
    for j in range(W + 1, W + new):  # the tokens the rule decides (the first comes from the prefill forward)
        a, b = torch.bincount(out[:, j], minlength=1024), torch.bincount(ref[:, j], minlength=1024)
        keep = (a + b) >= 10
        table = torch.stack([torch.cat([a[keep], a[~keep].sum()[None]]), torch.cat([b[keep], b[~keep].sum()[None]])])
        table = table[:, table.sum(0) > 0]
        assert chi2_contingency(table.numpy()).pvalue > 1e-3, (j, table)


def test_only_listed_generation_options_take_the_speculative_path():
    """An option outside the allow-list (here a logits-processing one, and one speculative decoding has no notion of)
    goes to transformers when the switch is on, and is refused when speculative decoding is asked for explicitly."""
    torch.manual_seed(0)
    model = load_model("tiny").eval()
    ids, attn = left_pad(PROMPTS[:2])
    model.speculative_generation = True
    for option in ({"no_repeat_ngram_size": 2}, {"min_new_tokens": 3}, {"do_sample": True, "min_p": 0.1}):
        plain(model, ids, attn, 8, **option)
        assert model.speculative_stats.drafts == 0, option
        with pytest.raises(ValueError, match="does not cover"):
            config = GenerationConfig(max_new_tokens=8, pad_token_id=2, eos_token_id=[3], **option)
            model.generate(input_ids=ids, attention_mask=attn, generation_config=config, speculative=True)
    model.speculative_generation = False
    config = GenerationConfig(max_new_tokens=8, pad_token_id=2, eos_token_id=[3], do_sample=True, top_k=0,
                              num_return_sequences=3)
    out = model.generate(input_ids=ids, attention_mask=attn, generation_config=config, speculative=True)
    assert out.shape[0] == 6 and model.pop_speculative_stats().drafts > 0
