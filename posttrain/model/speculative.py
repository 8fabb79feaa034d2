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

>>> import torch
>>> from posttrain.model import load_model
>>> model = load_model("tiny").eval()
>>> prompt = torch.tensor([[1, 5, 6, 7]])
>>> out, stats = speculative_generate(model, prompt, torch.ones_like(prompt), max_new_tokens=4, eos_token_id=[2])
>>> out.shape[0], stats.tokens >= stats.steps
(1, True)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper
from transformers.masking_utils import create_causal_mask

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


def mtp_layers(model: nn.Module) -> list[nn.Module]:
    """The model's MTP modules (depth 1 first); empty when it has none."""
    return list(model.model.layers[model.config.num_hidden_layers :])


def mtp_forward(
    model: nn.Module,
    layer: nn.Module,
    hidden: torch.Tensor,
    next_ids: torch.Tensor,
    position_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    cache: DynamicCache | None = None,
    keep: torch.Tensor | None = None,
    shared: tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One MTP depth, eqs. (21)-(23): (B, T, D) states and (B, T) ids of the next tokens -> (states, (B, T, V) logits).

    `hidden` is the main model's final-norm output (depth 1) or the previous depth's output; `next_ids[:, i]` is
    the token after position i (t_{i+k} at depth k). `attention_mask` is the (B, cache + T) 2-D mask; with `cache`
    the layer appends its keys there (at its own layer index) and attends to the cached ones. With `keep` (B,) only
    that slot of each row goes on past attention (MoE/MLP and head; states and logits (B, 1, .)): drafting needs
    the keys of every new slot but the output of one, and on a CPU the routed experts of the others cost as much
    as the rest of the block. This is `DeepseekV3DecoderLayer.forward` split after attention. `shared` is the
    (4-D mask, rotary (cos, sin)) pair the main model just built for the same slots, to reuse instead of rebuilding.
    """
    backbone = model.model
    x = layer.project(backbone.embed_tokens(next_ids), hidden)
    if shared is not None:
        mask, rotary = shared
    else:
        idx = layer.self_attn.layer_idx
        seen = cache is not None and len(cache.layers) > idx and cache.get_seq_length(idx) > 0
        mask = create_causal_mask(
            config=model.config,
            inputs_embeds=x,
            attention_mask=attention_mask,
            **{CACHE_KWARG: cache if seen else None},
            position_ids=position_ids,
            layer_idx=idx if seen else None,
        )
        rotary = backbone.rotary_emb(x, position_ids)
    attn_out, _ = layer.self_attn(
        hidden_states=layer.input_layernorm(x),
        attention_mask=mask,
        position_ids=position_ids,
        **{CACHE_KWARG: cache},
        use_cache=cache is not None,
        position_embeddings=rotary,
    )
    out = x + attn_out
    if keep is not None:
        out = out[torch.arange(out.shape[0], device=out.device), keep].unsqueeze(1)  # (B, 1, D)
    out = out + layer.mlp(layer.post_attention_layernorm(out))
    return out, model.lm_head(layer.shared_head.norm(out))


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


def _pick(probs_or_logits: torch.Tensor, sampled: bool, generator: torch.Generator | None) -> torch.Tensor:
    if sampled:
        return torch.multinomial(probs_or_logits, 1, generator=generator).squeeze(-1)
    return probs_or_logits.argmax(dim=-1)


@contextmanager
def _main_layer_inputs(model: nn.Module) -> Iterator[dict]:
    """A dict that holds the 4-D mask and rotary (cos, sin) the main model's first layer got in its latest forward."""
    seen: dict = {}

    def grab(module, args, kwargs):
        seen["mask"], seen["rotary"] = kwargs.get("attention_mask"), kwargs.get("position_embeddings")

    handle = model.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@torch.inference_mode()
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
) -> tuple[torch.Tensor, SpeculativeStats]:
    """Decode a left-padded (B, W) batch with MTP drafts: -> ((B, W + new) ids, stats), like `model.generate`'s
    output (rows that stop early are padded with `pad_token_id` after their end token).

    Greedy when `temperature` is 0, else sampled at `temperature` with nucleus `top_p`; for several samples per
    prompt repeat the rows (as `generate`'s `num_return_sequences` does).
    """
    layers = mtp_layers(model)
    if not layers:
        raise ValueError("speculative decoding drafts with the MTP module, and this model has none "
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

    with _main_layer_inputs(model) as step:
        # Prefill: the main model over the prompts, the first token, then MTP over the same slots -> first drafts.
        attn = attention_mask.to(device=device, dtype=torch.long)
        positions = (attn.cumsum(-1) - 1).masked_fill(attn == 0, 1)
        cache, mtp_cache = DynamicCache(config=model.config), DynamicCache()
        hidden = model.model(input_ids=input_ids, attention_mask=attn, position_ids=positions, **{CACHE_KWARG: cache},
                             use_cache=True).last_hidden_state
        first = _pick(probs(model.lm_head(hidden[:, -1:]).squeeze(1)), sampled, generator)
        next_ids = torch.cat([input_ids[:, 1:], first[:, None]], dim=1)
        _, draft_logits = mtp_forward(model, mtp, hidden, next_ids, positions, attn, mtp_cache,
                                      keep=torch.full((B,), W - 1, device=device))
        q = probs(draft_logits[:, 0])
        draft = _pick(q, sampled, generator)

        generated = [[t] for t in first.tolist()]
        done = torch.isin(first, stop)
        stats.tokens += B
        pending = first
        n_real = attn.sum(dim=1)  # real slots in the cache per row: the position id of `pending`
        done |= max_new_tokens <= 1
        while not done.all():
            active = ~done
            step_ids = torch.stack([pending, draft], dim=1)  # (B, 2)
            step_pos = n_real[:, None] + torch.arange(2, device=device)
            attn = torch.cat([attn, torch.ones(B, 2, dtype=attn.dtype, device=device)], dim=1)
            hidden = model.model(input_ids=step_ids, attention_mask=attn, position_ids=step_pos, **{CACHE_KWARG: cache},
                                 use_cache=True).last_hidden_state  # (B, 2, D)
            p = probs(model.lm_head(hidden))  # (B, 2, V)
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
            if not accepted.any():  # nobody kept the draft slot: drop it from both caches
                cache.crop(-1)
                attn, hidden, step_pos, mtp_ids = attn[:, :-1], hidden[:, :1], step_pos[:, :1], mtp_ids[:, :1]
            n_real = n_real + 1 + accepted.long()
            if done.all():
                break
            last = accepted.long() if mtp_ids.shape[1] == 2 else torch.zeros_like(accepted, dtype=torch.long)
            shared = None
            if step.get("mask") is not None:  # the main step's mask and rotary serve the same slots (cropped alike)
                n = mtp_ids.shape[1]
                mask = step["mask"] if n == 2 else step["mask"][:, :, :1, :-1]
                shared = mask, tuple(t[:, :n] for t in step["rotary"])
            _, draft_logits = mtp_forward(model, mtp, hidden, mtp_ids, step_pos, attn, mtp_cache, keep=last,
                                          shared=shared)
            q = probs(draft_logits[:, 0])
            draft = _pick(q, sampled, generator)

    stats.tokens += sum(len(g) for g in generated) - B
    width = max(len(g) for g in generated)
    out = torch.full((B, W + width), pad, dtype=input_ids.dtype, device=device)
    out[:, :W] = input_ids
    for r, g in enumerate(generated):
        out[r, W : W + len(g)] = torch.tensor(g, dtype=input_ids.dtype)
    return out, stats
