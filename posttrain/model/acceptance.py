"""How often the MTP module's drafts would be accepted: measured in one teacher-forced forward, no generation.

Definition (depth 1). At position i the MTP module reads the main model's final-norm state h_i and the embedding
of the text token t_{i+1} and drafts t_{i+2}; the draft is accepted when it equals the main model's greedy
prediction at position i+1 (argmax of logits_{i+1}), i.e. exactly what greedy self-speculative decoding
(`posttrain.model.speculative`) would do if the text were the model's own output. Depth k (chained as in
training and in vLLM: the depth-(k-1) output and Emb(t_{i+k})) drafts t_{i+k+1} and is checked against
argmax logits_{i+k}.

Counted positions: i is counted when t_{i+1} and t_{i+D+1} (D = depths measured) are both real tokens of the
completion (the assistant turn, `assistant_masks`), so every draft is of a completion token whose greedy check
exists: the prompt, padding and the position after the end token are not counted. Rows without an assistant mask
count every real token. For D > 1 the expected accepted length per step is the mean over counted positions of the
number of leading depths accepted (drafting stops at the first rejection); tokens per main-model step is one more.
The chain is teacher-forced (depth k embeds the text token, not depth k-1's draft), which is the decoding chain
exactly when the text is the model's own greedy output, e.g. completions generated with `posttrain/generation.py`.

>>> import torch
>>> from posttrain.model import load_model
>>> model = load_model("tiny").eval()
>>> ids = torch.randint(10, 1000, (2, 12))
>>> result = mtp_acceptance(model, ids)
>>> 0.0 <= result.acceptance <= 1.0, result.counted
(True, 20)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from posttrain.errors import UserError
from posttrain.model.mtp import mtp_layers
from posttrain.model.speculative import draft_step, main_pass


@dataclass
class AcceptanceResult:
    """Draft acceptance over the counted positions.

    `acceptance` (alpha): depth-1 drafts equal to the main model's greedy token; `depth_acceptance[k-1]`: depth k
    accepted given depths 1..k-1 were (chain rate); `expected_accepted`: mean accepted drafts per step with all
    depths drafting; `tokens_per_step` = 1 + that; `text_match`: depth-1 drafts equal to the text token t_{i+2}.
    """

    counted: int = 0
    accepted: list[int] = field(default_factory=list)  # per depth: positions whose depths 1..k all accepted
    text_matches: int = 0

    @property
    def depths(self) -> int:
        return len(self.accepted)

    @property
    def acceptance(self) -> float:
        return self.accepted[0] / self.counted if self.counted and self.accepted else float("nan")

    @property
    def depth_acceptance(self) -> list[float]:
        prev = [self.counted, *self.accepted[:-1]]
        return [a / p if p else float("nan") for a, p in zip(self.accepted, prev, strict=True)]

    @property
    def expected_accepted(self) -> float:
        return sum(self.accepted) / self.counted if self.counted else float("nan")

    @property
    def tokens_per_step(self) -> float:
        return 1.0 + self.expected_accepted

    @property
    def text_match(self) -> float:
        return self.text_matches / self.counted if self.counted else float("nan")

    def add(self, other: AcceptanceResult) -> None:
        if not self.accepted:
            self.accepted = [0] * len(other.accepted)
        self.counted += other.counted
        self.accepted = [a + b for a, b in zip(self.accepted, other.accepted, strict=True)]
        self.text_matches += other.text_matches

    def to_dict(self) -> dict:
        return asdict(self) | {
            "acceptance": self.acceptance,
            "depth_acceptance": self.depth_acceptance,
            "expected_accepted": self.expected_accepted,
            "tokens_per_step": self.tokens_per_step,
            "text_match": self.text_match,
        }


@torch.no_grad()
def draft_checks(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    depths: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced drafts of a right-padded (B, T) batch -> ((B, T, D) chain flags, (B, T) depth-1 drafts).

    flags[b, i, k-1]: the drafts of depths 1..k made at position i all equal the main model's greedy tokens.
    Positions whose targets lie past the row's end hold meaningless values; `mtp_acceptance` masks them.
    """
    layers = mtp_layers(model)
    if not layers:
        raise UserError("the model has no MTP module (num_nextn_predict_layers = 0): nothing to measure")
    D = len(layers) if depths is None else depths
    if not 1 <= D <= len(layers):
        raise UserError(f"depths must be in 1..{len(layers)} (the model's MTP depths), got {depths}")
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)
    main = main_pass(model, input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
    greedy = main.logits.argmax(dim=-1)  # (B, T): greedy[i] predicts t_{i+1}
    flags, chain, state, first = [], None, main.hidden, None
    for k, layer in enumerate(layers[:D], start=1):
        next_ids = torch.roll(input_ids, shifts=-k, dims=1)  # t_{i+k}
        state, logits = draft_step(model, layer, state, next_ids, positions, main.mask, main.rotary)
        draft = logits.argmax(dim=-1)  # (B, T): drafts of t_{i+k+1}
        ok = draft == torch.roll(greedy, shifts=-k, dims=1)  # checked by the greedy token at position i+k
        chain = ok if chain is None else chain & ok
        flags.append(chain)
        first = draft if first is None else first
    return torch.stack(flags, dim=-1), first


def mtp_acceptance(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    completion_mask: torch.Tensor | None = None,
    depths: int | None = None,
) -> AcceptanceResult:
    """Acceptance over a right-padded (B, T) batch; `completion_mask` (B, T) marks the tokens that count (see the
    module docstring), default every real token. `depths` defaults to all of the model's MTP depths."""
    flags, draft = draft_checks(model, input_ids, attention_mask, depths)
    B, T, D = flags.shape
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    counted_tokens = real if completion_mask is None else real & completion_mask.bool()
    # Position i counts when t_{i+1} .. t_{i+D+1} exist and t_{i+1}, t_{i+D+1} are completion tokens.
    count = torch.zeros(B, T, dtype=torch.bool, device=input_ids.device)
    if T > D + 1:
        count[:, : T - D - 1] = counted_tokens[:, 1 : T - D] & counted_tokens[:, D + 1 :]
    text = draft == torch.roll(input_ids, shifts=-2, dims=1)
    return AcceptanceResult(
        counted=int(count.sum()),
        accepted=[int((flags[..., k] & count).sum()) for k in range(D)],
        text_matches=int((text & count).sum()),
    )


def acceptance_on_rows(
    model: nn.Module,
    rows: Iterable[dict],
    *,
    batch_size: int = 16,
    depths: int | None = None,
    pad_token_id: int = 0,
) -> AcceptanceResult:
    """Acceptance over rows with `input_ids` (and optional `assistant_masks`: only completion tokens count), as
    `data_tools.read_source(..., tokenizer=...)` returns them; batched longest first, right-padded."""
    rows = sorted(rows, key=lambda r: len(r["input_ids"]), reverse=True)
    total = AcceptanceResult()
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = len(batch[0]["input_ids"])
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        comp = torch.zeros_like(ids)
        for r, row in enumerate(batch):
            n = len(row["input_ids"])
            ids[r, :n] = torch.tensor(row["input_ids"])
            attn[r, :n] = 1
            masks: Sequence[int] | None = row.get("assistant_masks")
            comp[r, :n] = torch.tensor(masks) if masks is not None and any(masks) else 1
        total.add(mtp_acceptance(model, ids.to(device), attn.to(device), comp.to(device), depths=depths))
    return total


def tokenize_conversations(tokenizer, conversations: list[list[dict]]) -> list[dict]:
    """`input_ids` and `assistant_masks` of each conversation, as `acceptance_on_rows` takes them."""
    return [tokenizer.apply_chat_template(m, return_dict=True, return_assistant_tokens_mask=True)
            for m in conversations]
