"""Per-layer expert load of every DeepSeek-V3 router, counted over training-mode forwards.

The load of expert i is the number of tokens (times top-K slots) routed to it; MaxVio = max_i load_i / mean load - 1
(the report's balance measure, §2.1.2 and Fig. 9). Counting is a forward hook on each `DeepseekV3TopkRouter`,
so it works for our model, plain `DeepseekV3ForCausalLM` and PEFT-wrapped models alike, and costs nothing until
a `RouterLoads` is created. Forwards under `torch.no_grad()` (eval, GRPO's old log-probs) are not counted; a
gradient-checkpointing recompute counts a layer twice, which scales a layer's loads uniformly and so changes
neither MaxVio nor the sign used by the bias update.
"""

from __future__ import annotations

import re

import torch
import torch.distributed as dist
from torch import nn
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

_LAYER = re.compile(r"layers\.(\d+)\.mlp\.gate$")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over data-parallel ranks in place when torch.distributed is initialized (gloo or NCCL)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def max_violation(loads: torch.Tensor) -> torch.Tensor:
    """(L, E) loads -> (L,) MaxVio = max load / mean load - 1 (0 for a layer that saw no tokens).

    >>> max_violation(torch.tensor([[1.0, 1.0, 2.0, 4.0]])).tolist()
    [1.0]
    """
    loads = loads.float()
    mean = loads.mean(dim=-1)
    return torch.where(mean > 0, loads.max(dim=-1).values / mean.clamp(min=1e-9) - 1, torch.zeros_like(mean))


class RouterLoads:
    """Counts tokens routed to each expert, per MoE layer (MTP layers included), until `pop()`.

    >>> loads = RouterLoads(model)          # doctest: +SKIP
    >>> model(**batch).loss.backward()      # doctest: +SKIP
    >>> loads.pop().shape                   # (L, E), summed over ranks  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module) -> None:
        found = [(n, m) for n, m in model.named_modules() if isinstance(m, DeepseekV3TopkRouter)]
        if not found:
            raise ValueError(f"{type(model).__name__} has no DeepseekV3TopkRouter: nothing to count or balance")
        self.routers = [m for _, m in found]
        self.layer_ids = [int(_LAYER.search(n).group(1)) if _LAYER.search(n) else i for i, (n, _) in enumerate(found)]
        self._counts = [torch.zeros(r.num_experts, dtype=torch.long, device=r.weight.device) for r in self.routers]
        self._handles = [r.register_forward_hook(self._hook(i)) for i, r in enumerate(self.routers)]

    def _hook(self, i: int):
        def count(module: nn.Module, args: tuple, output: tuple) -> None:
            if module.training and torch.is_grad_enabled():
                topk = output[2].flatten()  # (T*K,) expert ids
                self._counts[i].index_add_(0, topk, torch.ones_like(topk))

        return count

    def pop(self, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(L, E) loads since the last pop, summed over ranks (with `extra` reduced in the same all-reduce); resets."""
        device = self._counts[0].device
        loads = torch.stack([c.to(device) for c in self._counts]).double()
        flat = loads.flatten() if extra is None else torch.cat([loads.flatten(), extra.double().to(device)])
        flat = all_reduce_sum(flat)
        for c in self._counts:
            c.zero_()
        n = loads.numel()
        return flat[:n].view_as(loads), (None if extra is None else flat[n:])

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()
