"""Auxiliary-loss-free bias update, router statistics and the sequence-wise balance loss."""

from __future__ import annotations

import torch
from transformers import DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

from posttrain.model import RouterLoads, balance_step, load_model, max_violation, sequence_balance_loss
from posttrain.model.presets import PRESETS


def _skewed_router() -> torch.nn.Module:
    torch.manual_seed(0)
    router = DeepseekV3TopkRouter(DeepseekV3Config(**PRESETS["tiny"])).train()
    with torch.no_grad():
        router.weight.normal_(0, 0.02)
        router.weight[:3] += 0.1  # experts 0-2 have larger scores for most tokens
    return router


def test_bias_updates_alone_halve_maxvio_within_50_updates():
    router = _skewed_router()
    weight = router.weight.detach().clone()
    loads = RouterLoads(router)
    router(torch.randn(1024, router.hidden_dim))
    before = max_violation(balance_step(loads, gamma=0.005)).item()
    assert before > 1.0
    history = []
    for _ in range(50):
        router(torch.randn(1024, router.hidden_dim))  # a fresh batch each step
        history.append(max_violation(balance_step(loads, gamma=0.005)).item())
    assert max(history[-10:]) <= before / 2  # and it stays down
    assert abs(router.e_score_correction_bias.mean().item()) < 1e-6  # updates are recentred
    assert torch.equal(router.weight, weight)  # the bias alone did it


def test_loads_count_training_forwards_with_grad_only():
    router = _skewed_router()
    loads = RouterLoads(router)
    x = torch.randn(10, router.hidden_dim)
    router(x)
    with torch.no_grad():
        router(x)
    router.eval()(x)
    counts, _ = loads.pop()
    assert counts.sum().item() == 10 * router.top_k
    assert loads.pop()[0].sum().item() == 0  # pop resets


def test_max_violation_is_zero_for_uniform_load():
    assert max_violation(torch.full((2, 8), 5.0)).tolist() == [0.0, 0.0]


def test_sequence_balance_loss_sends_gradient_to_router_weight():
    router = _skewed_router()
    x = torch.randn(2 * 12, router.hidden_dim) + 1.0  # a shared direction: experts 0-2 always win
    logits, _, topk = router(x)
    segments = torch.arange(24) // 12
    loss = sequence_balance_loss(logits, topk, segments, torch.ones(24, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and loss > 1.0  # 1.0 is perfect balance; this router is skewed
    assert router.weight.grad.abs().sum() > 0


def test_model_adds_alpha_times_balance_loss_in_training():
    torch.manual_seed(0)
    ids = torch.randint(10, 1000, (2, 16))
    model = load_model("tiny", mtp_loss_weight=0.0, seq_balance_alpha=0.5).train()
    out = model(input_ids=ids, labels=ids)
    base = load_model("tiny", mtp_loss_weight=0.0)
    base.load_state_dict(model.state_dict())
    ce = base.train()(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(out.loss, ce + 0.5 * out.aux_loss)
    out.loss.backward()
    assert model.model.layers[1].mlp.gate.weight.grad.abs().sum() > 0


def test_packed_sequences_are_balanced_separately_and_padding_ignored():
    from posttrain.model.balance import batch_balance_loss

    router = _skewed_router()
    x = torch.randn(10, router.hidden_dim)
    logits, _, topk = router(x)

    def one(sl: slice) -> torch.Tensor:
        n = sl.stop - sl.start
        segments, valid = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.bool)
        return sequence_balance_loss(logits[sl], topk[sl], segments, valid)

    expected = (one(slice(0, 6)) + one(slice(6, 10))) / 2
    packed = batch_balance_loss([(logits, topk)], (1, 10), torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3]]), None)
    torch.testing.assert_close(packed, expected)
    padded_mask = torch.tensor([[1] * 6 + [0] * 4])
    torch.testing.assert_close(batch_balance_loss([(logits, topk)], (1, 10), None, padded_mask), one(slice(0, 6)))
