"""Test helpers shared by the MTP tests."""

from __future__ import annotations

import torch


def copy_mtp(model):
    """Make the MTP block pass h_i through (eq. 21 picks the state half, the block adds nothing): its depth-1 draft
    is then the main model's own greedy token at i, so drafts are accepted exactly where greedy repeats a token."""
    layer = model.model.layers[model.config.num_hidden_layers]
    D = model.config.hidden_size
    with torch.no_grad():
        layer.eh_proj.weight.zero_()
        layer.eh_proj.weight[:, D:] = torch.eye(D)
        layer.self_attn.o_proj.weight.zero_()
        for p in layer.mlp.parameters():
            p.zero_()
    return model


def left_pad(prompts: list[list[int]], pad: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W) left-padded ids and their attention mask for token-id prompts of different lengths."""
    W = max(map(len, prompts))
    ids = torch.full((len(prompts), W), pad)
    attn = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, W - len(p):] = torch.tensor(p)
        attn[r, W - len(p):] = 1
    return ids, attn
