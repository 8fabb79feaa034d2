"""MTP with parameters sharded by FSDP2 (`fully_shard`) on 2 CPU processes (gloo): the MTP loss, its gradients,
speculative drafting, MTP acceptance and plain (non-speculative) generation equal one process's.

The units are accelerate's FSDP2 plugin's (one per decoder layer, the MTP layer included, the embedding, the final
norm with the head, the root) or the plain per-layer layout with a root that reshards after forward, where the
drafting step has to gather the embedding and head itself. Each rank trains on its own half of the batch (rows of
equal length, so the mean of the two halves' losses is the whole batch's loss), generates from prompts of its own
(the ranks finish at different steps), then trains a second step, as GRPO alternates them.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import GenerationConfig

from posttrain.model import load_model
from posttrain.model.acceptance import mtp_acceptance
from tests.posttrain.mtp_helpers import copy_mtp, left_pad

ROWS = torch.randint(10, 1000, (4, 24), generator=torch.Generator().manual_seed(0))
PROMPTS = ([[1, 5, 6, 7, 8, 9, 10], [1, 50, 60]], [[1, 300, 301, 302, 303], [1, 77, 78, 79, 80, 81, 82, 83]])
MAX_NEW = (6, 20)  # per rank: rank 0 is done long before rank 1


def build(seed: int = 0):
    torch.manual_seed(seed)
    model = load_model("tiny")  # default MTP weight: the MTP loss is part of every training forward
    copy_mtp(model)  # drafts accepted often enough that both cache paths of the drafting loop run
    return model


def shard(model, layout: str):
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    if layout == "accelerate":  # accelerate 1.15 fsdp2_prepare_model: embedding and tail get units of their own
        fully_shard(model.model.embed_tokens, mesh=mesh)
        fully_shard([model.model.norm, model.lm_head], mesh=mesh, reshard_after_forward=False)
        fully_shard(model, mesh=mesh)
    else:  # the root's own parameters (embedding, norm, head) resharded after every forward
        fully_shard(model, mesh=mesh, reshard_after_forward=True)
    return model


def draft(model, prompts, max_new, speculative: bool = True):
    ids, attn = left_pad(prompts)
    config = GenerationConfig(max_new_tokens=max_new, pad_token_id=2, eos_token_id=[3], do_sample=False)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=attn, generation_config=config, speculative=speculative)
    model.train()
    return out, model.pop_speculative_stats()


def train_step(model, rows):
    out = model(input_ids=rows, labels=rows)
    out.loss.backward()
    return out.loss.detach(), out.mtp_loss.detach()


def full_grads(model) -> dict[str, torch.Tensor]:
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad
        grads[name] = (g.full_tensor() if isinstance(g, DTensor) else g).clone()
        p.grad = None
    return grads


def check_close(name, got, want):
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (name, (got - want).abs().max().item())


def worker(rank: int, init: str, layout: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        halves = ROWS.chunk(2)
        ref = build()
        ref_drafts = [draft(ref, p, n) for p, n in zip(PROMPTS, MAX_NEW, strict=True)]
        ref_plain = [draft(ref, p, n, speculative=False)[0] for p, n in zip(PROMPTS, MAX_NEW, strict=True)]
        ref_acceptance = mtp_acceptance(ref.eval(), ROWS).to_dict()
        ref.train()
        ref_steps = []
        for _ in range(2):
            losses = [train_step(ref, h) for h in halves]  # the mean of the halves' losses: one backward each, halved
            ref_steps.append((losses, {k: g / 2 for k, g in full_grads(ref).items()}))

        model = shard(build(), layout)
        mine = halves[rank]
        for step in range(2):
            loss, mtp = train_step(model, mine)
            (want_loss, want_mtp), want_grads = ref_steps[step][0][rank], ref_steps[step][1]
            check_close("loss", loss, want_loss)
            check_close("mtp_loss", mtp, want_mtp)
            grads = full_grads(model)
            assert grads.keys() == want_grads.keys()
            for name, g in grads.items():
                check_close(name, g, want_grads[name])
            if step == 0:  # rollouts between two training steps, as in GRPO
                out, stats = draft(model, PROMPTS[rank], MAX_NEW[rank])
                want_out, want_stats = ref_drafts[rank]
                assert out.tolist() == want_out.tolist()
                assert (stats.drafts, stats.accepted) == (want_stats.drafts, want_stats.accepted) and stats.accepted
                assert mtp_acceptance(model.eval(), ROWS).to_dict() == ref_acceptance
                # transformers' own decoding (no drafts) steps in lockstep too: rank 0 stops first, rank 1 goes on
                plain, _ = draft(model, PROMPTS[rank], MAX_NEW[rank], speculative=False)
                assert plain.tolist() == ref_plain[rank].tolist()
                model.train()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("layout", ["accelerate", "root_reshards"])
def test_mtp_loss_gradients_and_drafting_under_fsdp2_equal_one_process(layout, tmp_path):
    mp.spawn(worker, args=(f"file://{tmp_path}/pg", layout), nprocs=2, join=True)
