"""Expert parallelism at load (`--ep_size 2`, transformers' DistributedConfig) on 2 CPU processes (gloo): every
layer's routed experts, MTP's included, split 8 + 8; the loss (MTP in it) and the gradients equal one process's;
the checkpoint is saved whole and loads (whole or sharded again) to the same weights and losses; a resume is
refused with a clear error (the Trainer cannot checkpoint such a model's optimizer)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from datasets import Dataset
from torch.distributed.tensor import DTensor
from trl import SFTConfig

from posttrain.model import load_model, save_model
from posttrain.model.distributed import distributed_config
from posttrain.training import ModelArguments, SFTTrainer, build_model_and_tokenizer, train

ROWS = torch.randint(10, 1000, (4, 24), generator=torch.Generator().manual_seed(0))


def losses_and_grads(model, rows):
    out = model(input_ids=rows, labels=rows)
    out.loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            grads[name] = (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).clone()
            p.grad = None
    return out.loss.detach(), out.mtp_loss.detach(), grads


def check_close(name, got, want):
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (name, (got - want).abs().max().item())


def worker(rank: int, init: str, out_dir: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        halves = ROWS.chunk(2)
        torch.manual_seed(0)
        ref = load_model("tiny")
        ref_runs = [losses_and_grads(ref, h) for h in halves]  # each rank's half; the whole batch's mean gradient:
        ref_grads = {k: (ref_runs[0][2][k] + ref_runs[1][2][k]) / 2 for k in ref_runs[0][2]}

        args = ModelArguments(model_name_or_path="tiny", ep_size=2)
        model, tokenizer = build_model_and_tokenizer(args, seed=0)
        model.train()
        n = model.config.num_hidden_layers
        for i in range(model.config.first_k_dense_replace, n + 1):  # the MTP layer (index n) included
            experts = model.model.layers[i].mlp.experts.gate_up_proj
            assert experts.to_local().shape[0] == model.config.n_routed_experts // 2, i
        loss, mtp, grads = losses_and_grads(model, halves[rank])
        check_close("loss", loss, ref_runs[rank][0])
        check_close("mtp_loss", mtp, ref_runs[rank][1])
        assert grads.keys() == ref_grads.keys()
        for name, g in grads.items():
            check_close(name, g, ref_grads[name])

        saved = save_model(model, tokenizer, f"{out_dir}/final")
        assert (saved is not None) == (rank == 0)
        whole = load_model(f"{out_dir}/final").state_dict()
        for name, t in ref.state_dict().items():
            assert torch.equal(whole[name], t), name
        again = load_model(f"{out_dir}/final", distributed=distributed_config(2)).train()
        check_close("reloaded loss", losses_and_grads(again, halves[rank])[0], ref_runs[rank][0])

        # the Trainer cannot checkpoint this model's optimizer: asking to resume is an error before any step
        config = SFTConfig(output_dir=f"{out_dir}/run", use_cpu=True, bf16=False, report_to="none", max_steps=1,
                           save_only_model=True, resume_from_checkpoint="true")
        trainer = SFTTrainer(model=again, args=config, processing_class=tokenizer,
                             train_dataset=Dataset.from_dict({"input_ids": ROWS.tolist()}))
        with pytest.raises(ValueError, match="--ep_size 2: a model sharded at load .* cannot resume"):
            train(trainer, args)
    finally:
        dist.destroy_process_group()


def test_expert_parallel_loss_gradients_and_whole_checkpoint_equal_one_process(tmp_path):
    mp.spawn(worker, args=(f"file://{tmp_path}/pg", str(tmp_path)), nprocs=2, join=True)


def test_sizes_that_do_not_fit_the_processes_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed_config() is None
    with pytest.raises(ValueError, match="must divide --fsdp_size"):
        distributed_config(ep_size=3)
    with pytest.raises(ValueError, match="must equal the number of processes"):
        distributed_config(ep_size=2, fsdp_size=2)
