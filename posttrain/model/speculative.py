"""Self-speculative decoding with the model's own MTP module: draft with MTP depth 1, verify with the main model.

One step for a batch of B rows (T = the cache length, V the vocabulary, D the model dim):

    main model on [x_n, d]        (B, 2) -> logits (B, 2, V), final-norm states h (B, 2, D)
    verify d against logits_0      greedy: argmax == d; sampled: accept with min(1, p(d) / q(d)) (Leviathan et al.
                                   2023, Chen et al. 2023), else resample from norm(max(0, p - q))
    accepted: commit d and a bonus token from logits_1; rejected: commit the correction from logits_0
    MTP on the same 2 slots        input eq. (21) [Emb(next committed token); h] -> draft for the next step

so each main-model forward yields 1 + (draft accepted) tokens, at the cost of one main step over 2 tokens plus one
MTP block. Rows accept independently; their caches are kept right without per-row cropping: every step appends
the same 2 slots to every row, a row that rejected its draft masks that slot out (attention mask 0) and position
ids count only real slots, so what each row attends to is exactly what plain decoding would have in its cache.
When no row accepted, the slot is cropped from both caches (`DynamicCache.crop`). The MTP block has its own
`DynamicCache` with the same slot layout and mask as the main one (its attention is causal over the MTP states of
earlier positions, as in training).

Guarantees, and what is tested (tests/posttrain/test_speculative.py):
- Greedy output is token for token `model.generate`'s (left-padded batches of different prompt lengths), as long
  as both see the same logits; the verify forward runs 2 query tokens where plain decoding runs 1, so the two paths
  agree to float rounding only, and an exact tie in the top-2 logits could in principle break differently.
- Sampled output has `model.generate`'s distribution (temperature, then nucleus top_p, both applied to the main
  model's and the draft's logits as `TemperatureLogitsWarper` and `TopPLogitsWarper` do); the random stream
  differs, so samples are not the same tokens.
Only the depth-1 module drafts (one draft token per step, also when the model has more depths).

Every forward is a module call (the main model's, the MTP layer's), so hooks on them fire; under FSDP2 the
drafting step, which uses the main model's embedding and head outside its forward, first gathers the root's own
parameters (`FSDPModule.unshard`; a no-op when they are gathered already).

>>> import torch
>>> from posttrain.model import load_model
>>> model = load_model("tiny").eval()
>>> prompt = torch.tensor([[1, 5, 6, 7]])
>>> out, stats = speculative_generate(model, prompt, torch.ones_like(prompt), max_new_tokens=4, eos_token_id=[2])
>>> out.shape[0], stats.tokens >= stats.steps
(1, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

from posttrain.errors import UserError
from posttrain.model.mtp import MtpLayer, mtp_layers
from posttrain.touchpoints import CACHE_KWARG


@dataclass
class SpeculativeStats:
    """Counts over one `speculative_generate` call (active rows only).

    `steps` main-model forwards summed over rows, `drafts` drafts checked, `accepted` drafts accepted, `tokens`
    tokens committed (including the one from the prefill forward).
    """

    steps: int = 0
    drafts: int = 0
    accepted: int = 0
    tokens: int = 0

    @property
    def acceptance(self) -> float:
        """alpha: the fraction of drafts the main model accepted."""
        return self.accepted / self.drafts if self.drafts else float("nan")

    def add(self, other: SpeculativeStats) -> None:
        self.steps += other.steps
        self.drafts += other.drafts
        self.accepted += other.accepted
        self.tokens += other.tokens


@dataclass
class MainPass:
    """One forward of the main model: (B, T, V) logits (or the last `logits_to_keep`), (B, T, D) final-norm states,
    and the 4-D causal mask and rotary (cos, sin) its layers got, which an MTP depth over the same slots reuses."""

    logits: torch.Tensor
    hidden: torch.Tensor
    mask: torch.Tensor | None
    rotary: tuple[torch.Tensor, torch.Tensor]


def main_pass(model: nn.Module, **kwargs) -> MainPass:
    """Run the main model through its own `__call__` (so FSDP2's root gathers its parameters) with `kwargs`."""
    seen: dict = {}

    def grab_inputs(module, args, kw):
        seen["mask"], seen["rotary"] = kw.get("attention_mask"), kw.get("position_embeddings")

    def grab_output(module, args, output):
        seen["hidden"] = output.last_hidden_state

    handles = [model.model.layers[0].register_forward_pre_hook(grab_inputs, with_kwargs=True),
               model.model.register_forward_hook(grab_output)]
    try:
        logits = model(**kwargs).logits
    finally:
        for handle in handles:
            handle.remove()
    return MainPass(logits, seen["hidden"], seen["mask"], seen["rotary"])


def draft_step(
    model: nn.Module,
    layer: MtpLayer,
    hidden: torch.Tensor,
    next_ids: torch.Tensor,
    position_ids: torch.Tensor,
    mask: torch.Tensor | None,
    rotary: tuple[torch.Tensor, torch.Tensor],
    cache: DynamicCache | None = None,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One MTP depth over (B, T) slots: (B, T, D) states and (B, T) ids of the next tokens -> ((B, T, D) states,
    (B, T, V) draft logits), or logits of the (B,) slot `keep` of each row only ((B, 1, V)).

    `hidden` is the main model's final-norm output (depth 1) or the previous depth's output; `next_ids[:, i]` is the
    token after position i (t_{i+k} at depth k). `mask` and `rotary` are the main model's for the same slots
    (`MainPass`); with `cache` the layer appends its keys there (at its own layer index) and attends to the cached
    ones. The depth itself is the layer's `forward` (eqs. 21-23); embedding and head are the main model's.
    """
    if isinstance(model, FSDPModule):  # embedding and head outside the root's forward: keep them gathered
        model.unshard()
    state, head_in = layer(hidden, model.model.embed_tokens(next_ids), attention_mask=mask, position_ids=position_ids,
                           cache=cache, use_cache=cache is not None, position_embeddings=rotary)
    if keep is not None:
        head_in = head_in[torch.arange(head_in.shape[0], device=head_in.device), keep].unsqueeze(1)  # (B, 1, D)
    return state, model.lm_head(head_in)


def warp(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """(..., V) logits -> probabilities as `generate` samples them (temperature, then nucleus top_p)."""
    shape = logits.shape
    scores = logits.float().reshape(-1, shape[-1])
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores.softmax(dim=-1).reshape(shape)


def accept_drafts(
    draft: torch.Tensor, q: torch.Tensor | None, p: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The speculative sampling rule for one draft per row: (B,) draft tokens, their (B, V) draft probabilities q
    and (B, V) target probabilities p -> ((B,) accepted, (B,) token to commit when not accepted).

    Accept d with probability min(1, p(d) / q(d)); otherwise sample from norm(max(0, p - q)). The committed token
    then has distribution p exactly. With `q` None the rule is greedy: accept when argmax p == d.

    >>> p = torch.tensor([[0.5, 0.5, 0.0]]); q = torch.tensor([[0.0, 1.0, 0.0]])
    >>> accepted, fix = accept_drafts(torch.tensor([1]), q, p, torch.Generator().manual_seed(0))
    >>> (accepted.item(), fix.item()) in {(True, 0), (False, 0)}
    True
    """
    if q is None:
        best = p.argmax(dim=-1)
        return best == draft, best
    rows = torch.arange(draft.shape[0], device=draft.device)
    ratio = p[rows, draft] / q[rows, draft].clamp(min=1e-30)
    u = torch.rand(draft.shape[0], device=draft.device, generator=generator)
    accepted = u < ratio  # ratio >= 1 always accepts (u < 1)
    residual = (p - q).clamp(min=0)
    norm = residual.sum(dim=-1, keepdim=True)
    residual = torch.where(norm > 0, residual / norm.clamp(min=1e-30), p)  # p == q: never rejected; any fallback
    fix = torch.multinomial(residual, 1, generator=generator).squeeze(-1)
    return accepted, fix


def forwards_in_lockstep(model: nn.Module) -> bool:
    """True when every rank must run the same forwards: parameters sharded across ranks (FSDP2 units, DTensor
    parameters of expert or tensor parallelism, DeepSpeed ZeRO-3), more than one rank. transformers' `generate`
    makes the same choice for its own loop (ZeRO-3, or the `_is_fsdp_managed_module` flag `fully_shard` sets)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return False
    return (is_deepspeed_zero3_enabled() or any(isinstance(m, FSDPModule) for m in model.modules())
            or any(isinstance(p, DTensor) for p in model.parameters()))


def _all_done(done: torch.Tensor, synced: bool) -> bool:
    if not synced:
        return bool(done.all())
    unfinished = torch.tensor(float(not done.all()), device=done.device)
    dist.all_reduce(unfinished)
    return unfinished.item() == 0


def _pick(probs_or_logits: torch.Tensor, sampled: bool, generator: torch.Generator | None) -> torch.Tensor:
    if sampled:
        return torch.multinomial(probs_or_logits, 1, generator=generator).squeeze(-1)
    return probs_or_logits.argmax(dim=-1)


@torch.no_grad()  # as transformers' `generate`
def speculative_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: Sequence[int],
    pad_token_id: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    synced_gpus: bool = False,
) -> tuple[torch.Tensor, SpeculativeStats]:
    """Decode a left-padded (B, W) batch with MTP drafts: -> ((B, W + new) ids, stats), like `model.generate`'s
    output (rows that stop early are padded with `pad_token_id` after their end token).

    Greedy when `temperature` is 0, else sampled at `temperature` with nucleus `top_p`; for several samples per
    prompt repeat the rows (as `generate`'s `num_return_sequences` does). With `synced_gpus` (parameters sharded
    across ranks, `forwards_in_lockstep`) a rank whose rows are done keeps stepping until every rank is, as
    transformers' `generate` does: each forward gathers parameters with the other ranks.
    """
    layers = mtp_layers(model)
    if not layers:
        raise UserError("speculative decoding drafts with the MTP module, and this model has none "
                        "(num_nextn_predict_layers = 0); decode without speculative=True")
    mtp = layers[0]
    device = input_ids.device
    B, W = input_ids.shape
    stop = torch.tensor(list(eos_token_id), device=device)
    pad = int(pad_token_id) if pad_token_id is not None else int(stop[0])
    sampled = temperature > 0
    probs = (lambda logits: warp(logits, temperature, top_p)) if sampled else (lambda logits: logits)
    stats = SpeculativeStats()
    rows = torch.arange(B, device=device)

    # Prefill: the main model over the prompts, the first token, then MTP over the same slots -> first drafts.
    attn = attention_mask.to(device=device, dtype=torch.long)
    positions = (attn.cumsum(-1) - 1).masked_fill(attn == 0, 1)
    cache, mtp_cache = DynamicCache(config=model.config), DynamicCache()
    main = main_pass(model, input_ids=input_ids, attention_mask=attn, position_ids=positions, **{CACHE_KWARG: cache},
                     use_cache=True, logits_to_keep=1)
    first = _pick(probs(main.logits[:, -1]), sampled, generator)
    next_ids = torch.cat([input_ids[:, 1:], first[:, None]], dim=1)
    _, draft_logits = draft_step(model, mtp, main.hidden, next_ids, positions, main.mask, main.rotary, mtp_cache,
                                 keep=torch.full((B,), W - 1, device=device))
    q = probs(draft_logits[:, 0])
    draft = _pick(q, sampled, generator)

    generated = [[t] for t in first.tolist()]
    done = torch.isin(first, stop)
    stats.tokens += B
    pending = first
    n_real = attn.sum(dim=1)  # real slots in the cache per row: the position id of `pending`
    done |= max_new_tokens <= 1
    while not _all_done(done, synced_gpus):
        active = ~done
        step_ids = torch.stack([pending, draft], dim=1)  # (B, 2)
        step_pos = n_real[:, None] + torch.arange(2, device=device)
        attn = torch.cat([attn, torch.ones(B, 2, dtype=attn.dtype, device=device)], dim=1)
        main = main_pass(model, input_ids=step_ids, attention_mask=attn, position_ids=step_pos, **{CACHE_KWARG: cache},
                         use_cache=True)
        p = probs(main.logits)  # (B, 2, V)
        accepted, fix = accept_drafts(draft, q if sampled else None, p[:, 0], generator)
        bonus = _pick(p[:, 1], sampled, generator)
        committed = torch.where(accepted, draft, fix)  # the token after `pending`
        pending = torch.where(accepted, bonus, fix)

        c_list, b_list, a_list, stop_set = committed.tolist(), bonus.tolist(), accepted.tolist(), set(stop.tolist())
        for r in rows[active].tolist():  # commit: one or two tokens, up to an end token or the length limit
            for t in [c_list[r], b_list[r]] if a_list[r] else [c_list[r]]:
                if len(generated[r]) < max_new_tokens:
                    generated[r].append(t)
                    if t in stop_set:
                        break
            if generated[r][-1] in stop_set or len(generated[r]) >= max_new_tokens:
                done[r] = True
        stats.steps += int(active.sum())
        stats.drafts += int(active.sum())
        stats.accepted += int((accepted & active).sum())

        attn[:, -1] = accepted.long()  # a rejected draft's slot stays in the cache, masked out
        mtp_ids = torch.stack([committed, bonus], dim=1)  # the token after each slot (garbage where rejected)
        hidden, mask, rotary = main.hidden, main.mask, main.rotary  # the main step's mask and rotary fit the MTP slots
        if not accepted.any():  # nobody kept the draft slot: drop it from both caches
            cache.crop(-1)
            attn, hidden, step_pos, mtp_ids = attn[:, :-1], hidden[:, :1], step_pos[:, :1], mtp_ids[:, :1]
            mask, rotary = (None if mask is None else mask[:, :, :1, :-1]), tuple(t[:, :1] for t in rotary)
        n_real = n_real + 1 + accepted.long()
        if _all_done(done, synced_gpus):
            break
        last = accepted.long() if mtp_ids.shape[1] == 2 else torch.zeros_like(accepted, dtype=torch.long)
        _, draft_logits = draft_step(model, mtp, hidden, mtp_ids, step_pos, mask, rotary, mtp_cache, keep=last)
        q = probs(draft_logits[:, 0])
        draft = _pick(q, sampled, generator)

    stats.tokens += sum(len(g) for g in generated) - B
    width = max(len(g) for g in generated)
    out = torch.full((B, W + width), pad, dtype=input_ids.dtype, device=device)
    out[:, :W] = input_ids
    for r, g in enumerate(generated):
        out[r, W : W + len(g)] = torch.tensor(g, dtype=input_ids.dtype)
    return out, stats
