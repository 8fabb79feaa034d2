"""Load balancing for DeepSeek-V3 routers: the auxiliary-loss-free bias update and the sequence-wise loss.

Auxiliary-loss-free balancing (report §2.1.2): routing picks the top-K of s_{i,t} + b_i, the gate values still use
s_{i,t}; after each optimizer step

    b_i <- b_i + gamma * sign(mean_j load_j - load_i)            (update recentred to zero mean here)

with loads counted over the whole global batch (`RouterLoads`). `b` is the router's `e_score_correction_bias`.

Complementary sequence-wise balance loss (eqs. 17-20), per sequence of T tokens, N_r routed experts, top-K_r:

    L_Bal = alpha * sum_i f_i P_i                                  (17)
    f_i   = N_r / (K_r T) * sum_t 1(s_{i,t} in TopK)               (18)
    s'_{i,t} = s_{i,t} / sum_j s_{j,t}                             (19)
    P_i   = 1/T * sum_t s'_{i,t}                                   (20)

averaged over the sequences of the batch (packed sequences counted separately) and summed over MoE layers.
"""

from __future__ import annotations

import torch
from torch import nn

from posttrain.model.mtp import segment_ids
from posttrain.model.router_stats import RouterLoads


@torch.no_grad()
def update_bias(routers: list[nn.Module], loads: torch.Tensor, gamma: float) -> None:
    """b += gamma * sign(mean load - load), recentred to zero mean, for each router and its (E,) row of `loads`."""
    for router, load in zip(routers, loads, strict=True):
        if load.sum() == 0:
            continue
        delta = gamma * torch.sign(load.mean() - load)
        router.e_score_correction_bias.add_((delta - delta.mean()).to(router.e_score_correction_bias))


def balance_step(router_loads: RouterLoads, gamma: float = 1e-3) -> torch.Tensor:
    """Call after each optimizer step in a custom loop: pops the global-batch loads, updates biases, returns (L, E).

    >>> loads = RouterLoads(model)                       # doctest: +SKIP
    >>> for batch in data:                               # doctest: +SKIP
    ...     model(**batch).loss.backward(); opt.step(); opt.zero_grad()
    ...     balance_step(loads, gamma=1e-3)
    """
    loads, _ = router_loads.pop()
    update_bias(router_loads.routers, loads, gamma)
    return loads


def sequence_balance_loss(
    router_logits: torch.Tensor, topk_indices: torch.Tensor, segments: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Eqs. (18)-(20) and the sum of (17) without alpha, averaged over sequences, for one MoE layer.

    router_logits (N, E) and topk_indices (N, K) are the router's outputs for N = B*T tokens; segments (N,) numbers
    each token's sequence in [0, N); valid (N,) is False for padding.
    """
    N, E = router_logits.shape
    K = topk_indices.shape[-1]
    w = valid.to(router_logits.dtype).unsqueeze(-1)  # (N, 1)
    scores = router_logits.sigmoid()
    s_norm = scores / scores.sum(dim=-1, keepdim=True)  # (19)
    chosen = torch.zeros_like(scores).scatter_(1, topk_indices, 1.0)  # (N, E) indicator of (18)
    tokens = torch.zeros(N, 1, device=scores.device, dtype=scores.dtype).index_add_(0, segments, w)  # (S, 1)
    f = torch.zeros_like(scores).index_add_(0, segments, chosen * w) * E / (K * tokens.clamp(min=1))  # (18)
    p = torch.zeros_like(scores).index_add_(0, segments, s_norm * w) / tokens.clamp(min=1)  # (20)
    per_seq = (f * p).sum(dim=-1)  # (S,)
    has = tokens.squeeze(-1) > 0
    return (per_seq * has).sum() / has.sum().clamp(min=1)


def batch_balance_loss(
    routed: list[tuple[torch.Tensor, torch.Tensor]],
    shape: tuple[int, int],
    position_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Sum over MoE layers of `sequence_balance_loss` for a (B, T) batch, packed sequences and padding handled.

    `routed` holds each layer's (N, E) router logits and (N, K) chosen experts, N = B*T.
    """
    B, T = shape
    device = routed[0][0].device
    segments = segment_ids((B, T), position_ids, device) - 1  # (B, T), from 0 in each row
    segments = (segments + T * torch.arange(B, device=device).unsqueeze(1)).flatten()  # (N,) unique per row
    valid = torch.ones(B * T, dtype=torch.bool, device=device)
    if attention_mask is not None and attention_mask.dim() == 2:
        valid = attention_mask.flatten().bool()
    return sum(sequence_balance_loss(logits, topk, segments, valid) for logits, topk in routed)
