"""Multi-token prediction (DeepSeek-V3 report §2.2), the training path transformers lacks.

Depth k (1..D) predicts token i+k+1 from the depth-(k-1) state of token i and the embedding of token i+k:

    h'_i^k = M_k [RMSNorm(Emb(t_{i+k})); RMSNorm(h_i^{k-1})]        (21)  M_k = eh_proj, D x 2D
    h^k_{1:T-k} = TRM_k(h'^k_{1:T-k})                                (22)  one full decoder block
    P^k_{i+k+1} = OutHead(h_i^k)                                      (23)  own final norm, shared head
    L^k_MTP = CrossEntropy(P^k_{2+k:T+1}, t_{2+k:T+1})                (24)
    L_MTP = lambda / D * sum_k L^k_MTP                                (25)

The concatenation order is the released checkpoints' (embedding first, as vLLM and SGLang read it), the report
writes it the other way round. h^0 is the main model's output after its final norm, the state vLLM hands its MTP
drafter, so weights trained here are the weights the drafter needs. An `MtpLayer` is a `DeepseekV3DecoderLayer`
plus `enorm`, `hnorm`, `eh_proj` and `shared_head.norm`, so it sits at `model.layers.{num_hidden_layers + k - 1}`
under exactly the released names; the embedding and output head are the main model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask
from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm

from posttrain.touchpoints import CACHE_KWARG


class SharedHead(nn.Module):
    """The MTP module's own final norm; the output projection is the main model's `lm_head` (not owned here)."""

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        self.norm = DeepseekV3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class MtpLayer(DeepseekV3DecoderLayer):
    """One MTP depth: a full decoder block (attention + MoE/MLP) with the eq. (21) input projection in front and
    the eq. (23) norm behind. Its `forward` is the one place the depth runs (the MTP loss, speculative drafting and
    acceptance all call the module), so hooks on it, such as FSDP2's parameter gathering, always fire."""

    def __init__(self, config: DeepseekV3Config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        self.enorm = DeepseekV3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.hnorm = DeepseekV3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.shared_head = SharedHead(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        next_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eqs. (21)-(23): (B, T, D) states h^{k-1} and (B, T, D) embeddings of t_{i+k} -> ((B, T, D) h^k, the
        pre-norm output the next depth reads, and (B, T, D) its shared-head norm, what the main `lm_head` projects).

        The other arguments are the decoder block's (the 4-D causal mask, rotary (cos, sin), the depth's own KV
        cache at this layer's index).
        """
        x = self.eh_proj(torch.cat([self.enorm(next_embeds), self.hnorm(hidden_states)], dim=-1))  # (21)
        # Positional: the block's cache argument is `past_key_values` before transformers 5.24, `cache` after.
        out = super().forward(x, attention_mask, position_ids, cache, use_cache, position_embeddings, **kwargs)  # (22)
        return out, self.shared_head.norm(out)  # (23) up to the main model's lm_head


def mtp_layers(model: nn.Module) -> list[MtpLayer]:
    """The MTP modules of a `DeepseekV3ForCausalLM`-shaped model (depth 1 first); empty when it has none."""
    return list(model.model.layers[model.config.num_hidden_layers :])


def segment_ids(shape: tuple[int, int], position_ids: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """(B, T) ids of the packed sequence each token belongs to: a new one starts wherever a position is 0."""
    starts = torch.zeros(shape, dtype=torch.long, device=device)
    if position_ids is not None:
        starts |= (position_ids.expand(shape) == 0).long()
    starts[:, 0] = 1
    return starts.cumsum(dim=1)


def mtp_targets(
    labels: torch.Tensor, segments: torch.Tensor, attention_mask: torch.Tensor | None, depth: int
) -> torch.Tensor:
    """(B, T) targets of depth k: labels[i+k+1] where token i and i+k+1 are real and in the same sequence, else -100.

    >>> mtp_targets(torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[1, 1, 1, 2, 2]]), None, 1).tolist()
    [[7, -100, -100, -100, -100]]
    """
    shift = depth + 1
    targets = torch.full_like(labels, -100)
    if labels.shape[1] <= shift:
        return targets
    valid = segments[:, :-shift] == segments[:, shift:]
    if attention_mask is not None and attention_mask.dim() == 2:
        valid &= attention_mask[:, :-shift].bool() & attention_mask[:, shift:].bool()
    targets[:, :-shift] = labels[:, shift:].masked_fill(~valid, -100)
    return targets


def mtp_loss(
    model: nn.Module,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    **varlen_kwargs,
) -> torch.Tensor:
    """Mean over depths of the MTP cross-entropies (eq. 24), without the lambda of eq. (25).

    `model` is the `DeepseekV3ForCausalLM`-shaped model whose `model.layers[num_hidden_layers:]` are `MtpLayer`s;
    `hidden` (B, T, D) is its final-norm output. Every depth runs over all T positions with the main model's
    positions and (block-diagonal, for packed batches) causal mask: the last k positions of each sequence read an
    embedding from past its end, but nothing earlier attends to them and they are left out of the loss.
    """
    config = model.config
    backbone = model.model
    B, T = input_ids.shape
    if position_ids is None:
        position_ids = torch.arange(T, device=input_ids.device).unsqueeze(0)
    segments = segment_ids((B, T), position_ids, input_ids.device)
    position_embeddings = backbone.rotary_emb(hidden, position_ids)
    causal_mask = create_causal_mask(
        config=config,
        inputs_embeds=hidden,
        attention_mask=attention_mask,
        **{CACHE_KWARG: None},
        position_ids=position_ids,
    )
    losses = []
    for k, layer in enumerate(mtp_layers(model), start=1):
        embeds = backbone.embed_tokens(torch.roll(input_ids, shifts=-k, dims=1))  # (B, T, D): Emb(t_{i+k})
        hidden, head_in = layer(  # the pre-norm output is the next depth's h^{k-1} (as vLLM chains depths)
            hidden,
            embeds,
            attention_mask=causal_mask,
            position_ids=position_ids,
            position_embeddings=position_embeddings,
            **varlen_kwargs,  # cu_seq_lens / max_length of padding-free batches, for flash-attention varlen
        )
        targets = mtp_targets(labels, segments, attention_mask, k)
        keep = targets != -100  # project only the scored positions: no (B, T, V) logits
        logits = model.lm_head(head_in[keep])  # eq. (23), (N, V)
        losses.append(F.cross_entropy(logits.float(), targets[keep], reduction="sum") / keep.sum().clamp(min=1))
    return torch.stack(losses).mean()
