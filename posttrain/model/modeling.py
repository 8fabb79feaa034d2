"""`DeepseekV3ForCausalLM` plus what post-training needs: MTP training and the sequence-wise balance loss.

Everything else (MLA with the latent KV cache, grouped expert matmuls, sigmoid group-limited routing with
`e_score_correction_bias`, `generate`) is transformers' own. With MTP and the balance loss off, or outside
training, the forward is the parent's, logits bit for bit.

Training losses (report §2.2 eq. 25 and §2.1.2 eq. 17), config fields that survive save/load:
    loss = CE + mtp_loss_weight * L_MTP + seq_balance_alpha * L_Bal

The extra terms reach the gradient through the backbone output (an identity whose backward adds
`aux_grad_scale` * d(extra), as DeepSeek-V2's AddAuxiliaryLoss does) rather than through `outputs.loss`: TRL's
trainers replace `model.forward` with a fused LM head that computes its own loss from log-probs and never reads
`outputs.loss`, but they still run `model.model`, so the terms are computed in a hook on it. Labels reach that
hook through a forward pre-hook on this model, which TRL's patched forward and PEFT's wrappers both go through.
`aux_grad_scale` is 1 / gradient-accumulation steps and `loss_scale` an fp16 GradScaler's scale (both set by the
trainer callback), matching how trainers scale the main loss; `outputs.loss` carries the terms' value (detached)
times `aux_grad_scale`, so `Trainer`'s logged loss sums to CE + extras over an accumulated step (times the world
size under DDP, like Trainer's own token averaging).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.modeling_outputs import MoeCausalLMOutputWithPast
from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3ForCausalLM, DeepseekV3MoE

from posttrain.model.balance import batch_balance_loss
from posttrain.model.mtp import MtpLayer, mtp_layers, mtp_loss
from posttrain.model.speculative import SpeculativeStats, forwards_in_lockstep, speculative_generate
from posttrain.touchpoints import allow_experts_implementation, drop_redundant_packed_mask, to_fused

# GenerationConfig fields speculative decoding reproduces, each with the values it covers given do_sample; a call
# that sets any other field (one a newer transformers adds included) goes to transformers' `generate`.
SPECULATIVE_OPTIONS: dict[str, Callable[[Any, bool], bool]] = {
    "max_new_tokens": lambda v, sampled: True,
    "do_sample": lambda v, sampled: True,
    "temperature": lambda v, sampled: True,
    "top_p": lambda v, sampled: True,
    "top_k": lambda v, sampled: not sampled or v == 0,  # 0: no top-k cut
    "num_beams": lambda v, sampled: v == 1,
    "num_return_sequences": lambda v, sampled: True,  # rows repeated, as generate does
    "repetition_penalty": lambda v, sampled: v == 1.0,
    "pad_token_id": lambda v, sampled: True,
    "bos_token_id": lambda v, sampled: True,
    "eos_token_id": lambda v, sampled: True,
    "use_cache": lambda v, sampled: True,
    "disable_compile": lambda v, sampled: True,
    "_from_model_config": lambda v, sampled: True,
    "transformers_version": lambda v, sampled: True,
    **{f"output_{k}": (lambda v, sampled: not v) for k in ("attentions", "hidden_states", "scores", "logits")},
    "return_dict_in_generate": lambda v, sampled: not v,
}
MTP_LOSS_WEIGHT = 0.1  # lambda: the report uses 0.3 for the first 10T tokens, 0.1 for the rest
SEQ_BALANCE_ALPHA = 0.0  # alpha: "extremely small" in the report (0.0001); off by default


@dataclass
class DeepseekV3MTPOutput(MoeCausalLMOutputWithPast):
    """`MoeCausalLMOutputWithPast` with the MTP loss (mean over depths, before lambda); `aux_loss` is L_Bal / alpha."""

    mtp_loss: torch.FloatTensor | None = None


class _AddLossGrad(torch.autograd.Function):
    """Identity on `hidden`; the backward also gives `loss` the gradient `scale` (DeepSeek-V2's AddAuxiliaryLoss)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, loss: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale, ctx.like = scale, loss.detach()
        return hidden

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, torch.full_like(ctx.like, ctx.scale), None


@allow_experts_implementation  # our experts are transformers' own (posttrain.touchpoints)
class DeepseekV3MTPForCausalLM(DeepseekV3ForCausalLM):
    """DeepSeek-V3 with `num_nextn_predict_layers` trainable MTP modules and the sequence-wise balance loss.

    >>> from posttrain.model import load_model
    >>> model = load_model("tiny")
    >>> type(model.model.layers[model.config.num_hidden_layers]).__name__
    'MtpLayer'
    """

    # The released checkpoints repeat the shared embedding and head inside each MTP layer; we use the main ones.
    _keys_to_ignore_on_load_unexpected = [r"model\.layers\.\d+\.(embed_tokens|shared_head\.head)\.weight"]

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__(config)
        n = config.num_hidden_layers
        self.model.layers.extend(MtpLayer(config, n + k) for k in range(config.num_nextn_predict_layers or 0))
        self.aux_grad_scale = 1.0
        self.loss_scale = 1.0  # fp16: the GradScaler's scale, which the main loss's backward carries (set per step)
        self.speculative_generation = False  # True: `generate` drafts with MTP where it can (see `generate`)
        self.speculative_stats = SpeculativeStats()
        self.loss_sums: dict[str, torch.Tensor] = {}  # name -> (sum, count) over training forwards, for logging
        self._labels: torch.Tensor | None = None
        self._router_outputs: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._extras: dict[str, torch.Tensor] = {}
        self.register_forward_pre_hook(self._remember_labels, with_kwargs=True)
        self.model.register_forward_pre_hook(self._start_router_capture)
        self.model.register_forward_pre_hook(drop_redundant_packed_mask, with_kwargs=True)
        self.model.register_forward_hook(self._add_training_losses, with_kwargs=True)
        for layer in self.model.layers[config.first_k_dense_replace : n]:
            if isinstance(layer.mlp, DeepseekV3MoE):
                layer.mlp.gate.register_forward_hook(self._capture_router)
        self.post_init()

    @property
    def mtp_loss_weight(self) -> float:
        """lambda of eq. (25); 0 turns MTP off (no extra compute)."""
        return float(getattr(self.config, "mtp_loss_weight", MTP_LOSS_WEIGHT))

    @property
    def seq_balance_alpha(self) -> float:
        """alpha of eq. (17); 0 (default) turns the sequence-wise loss off."""
        return float(getattr(self.config, "seq_balance_alpha", SEQ_BALANCE_ALPHA))

    def freeze_idle_mtp(self) -> None:
        """With `mtp_loss_weight` 0, freeze the MTP layers (kept and saved, not trained), adapters put on them
        included: optimizers then skip them, DDP without find_unused_parameters does not wait for their gradients,
        and FSDP's optimizer load does not look for states they never got."""
        if self.mtp_loss_weight == 0:
            self.model.layers[self.config.num_hidden_layers :].requires_grad_(False)

    def _remember_labels(self, module, args, kwargs) -> None:
        self._labels = kwargs.get("labels")

    def _start_router_capture(self, module, args) -> None:
        training = self.training and torch.is_grad_enabled()  # not eval, not GRPO's no-grad old log-probs
        self._router_outputs = [] if training and self.seq_balance_alpha > 0 else None

    def _capture_router(self, module, args, output) -> None:
        if self._router_outputs is not None:
            self._router_outputs.append((output[0], output[2]))  # (N, E) logits, (N, K) chosen experts

    def _add_training_losses(self, module, args, kwargs, output):
        """Backbone forward hook: compute the extra losses and attach their gradient to the (B, T, D) output."""
        routed, self._router_outputs = self._router_outputs, None
        labels, self._labels = self._labels, None
        if not (self.training and torch.is_grad_enabled()):
            return None
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        position_ids, attention_mask = kwargs.get("position_ids"), kwargs.get("attention_mask")
        hidden = output.last_hidden_state
        extras = {}
        if self.mtp_loss_weight > 0 and len(self.model.layers) > self.config.num_hidden_layers:
            if labels is not None and input_ids is not None:
                varlen = {k: v for k, v in kwargs.items() if k.startswith(("cu_seq_lens", "max_length"))}
                extras["mtp_loss"] = mtp_loss(self, hidden, input_ids, labels, position_ids, attention_mask, **varlen)
        if routed:
            extras["seq_balance_loss"] = batch_balance_loss(routed, hidden.shape[:2], position_ids, attention_mask)
        if not extras:
            return None
        weights = {"mtp_loss": self.mtp_loss_weight, "seq_balance_loss": self.seq_balance_alpha}
        total = sum(weights[k] * v for k, v in extras.items())
        for k, v in extras.items():
            acc = self.loss_sums.setdefault(k, torch.zeros(2, device=v.device))
            acc += torch.stack([v.detach().float(), torch.ones_like(acc[0])])
        self._extras = {k: v.detach() for k, v in extras.items()} | {"total": total.detach()}
        output.last_hidden_state = _AddLossGrad.apply(hidden, total, self.aux_grad_scale * self.loss_scale)
        return output

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> DeepseekV3MTPOutput:
        """The parent's forward; in training `loss` also holds aux_grad_scale * (lambda*L_MTP + alpha*L_Bal).

        The KV cache passes through `kwargs` under whichever name the installed transformers uses
        (`posttrain.touchpoints.CACHE_KWARG`).
        """
        self._extras = {}
        out = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        extras, self._extras = self._extras, {}
        loss = out.loss
        if loss is not None and "total" in extras:
            loss = loss + self.aux_grad_scale * extras["total"]
        fields = {**out, "loss": loss, "mtp_loss": extras.get("mtp_loss"), "aux_loss": extras.get("seq_balance_loss")}
        return DeepseekV3MTPOutput(**fields)

    def generate(self, inputs: torch.Tensor | None = None, generation_config: GenerationConfig | None = None,
                 speculative: bool | None = None, **kwargs):
        """transformers' `generate`, or MTP self-speculative decoding (`speculative_generate`): the one place that
        chooses between them.

        `speculative` True drafts with MTP and refuses a call it does not cover; None (what TRL's GRPOTrainer
        passes) drafts when `speculative_generation` is set and the call is covered, else hands it to transformers
        unchanged. Covered: `input_ids` + `attention_mask`, greedy or temperature / top-p sampling, any
        `num_return_sequences`, and no option outside `SPECULATIVE_OPTIONS` (an option added to transformers is
        not covered until listed). Greedy output is the same tokens, sampled output the same distribution;
        acceptance counts accumulate in `speculative_stats`.
        """
        wanted = self.speculative_generation if speculative is None else speculative
        plan = self._speculative_plan(inputs, generation_config, kwargs) if wanted else None
        if isinstance(plan, str):
            if speculative:
                raise ValueError(f"speculative decoding does not cover this generate call: {plan}")
            plan = None
        if plan is None:
            return super().generate(inputs, generation_config=generation_config, **kwargs)
        out, stats = speculative_generate(self, **plan)
        self.speculative_stats.add(stats)
        return out

    def _speculative_plan(self, inputs, generation_config, kwargs) -> dict | str:
        """`speculative_generate`'s arguments for a `generate` call it reproduces exactly, else why not."""
        ids = kwargs.get("input_ids", inputs)
        mask = kwargs.get("attention_mask")
        if ids is None or mask is None:
            return "it needs input_ids and attention_mask"
        if not mtp_layers(self):
            return "the model has no MTP module (num_nextn_predict_layers = 0)"
        extra = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "synced_gpus")}
        config = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        unknown = config.update(**extra)
        if unknown:
            return f"unsupported arguments {sorted(unknown)}"
        sampled = bool(config.do_sample)
        for name, value in config.to_dict().items():
            covers = SPECULATIVE_OPTIONS.get(name)
            if value is not None and (covers is None or not covers(value, sampled)):
                return f"{name}={value!r}"
        if config.max_new_tokens is None or config.eos_token_id is None:
            return "it needs max_new_tokens and eos_token_id"
        eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
        n = config.num_return_sequences or 1
        synced = kwargs.get("synced_gpus")
        return dict(input_ids=ids.repeat_interleave(n, dim=0), attention_mask=mask.repeat_interleave(n, dim=0),
                    max_new_tokens=config.max_new_tokens, eos_token_id=eos, pad_token_id=config.pad_token_id,
                    temperature=(config.temperature or 1.0) if sampled else 0.0,
                    top_p=config.top_p if sampled and config.top_p is not None else 1.0,
                    synced_gpus=forwards_in_lockstep(self) if synced is None else synced)

    def pop_speculative_stats(self) -> SpeculativeStats:
        """Draft counts of speculative `generate` calls since the last call; resets."""
        stats, self.speculative_stats = self.speculative_stats, SpeculativeStats()
        return stats

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """`nn.Module.load_state_dict` that also takes a saved checkpoint's released layout (per-expert keys, MTP
        copies; `posttrain.touchpoints.to_fused`), so the Trainer's resume restores the routed experts instead of
        skipping them."""
        return super().load_state_dict(to_fused(self, state_dict), strict=strict, assign=assign)

    def pop_loss_sums(self) -> dict[str, torch.Tensor]:
        """(sum, count) of each extra loss over training forwards since the last call; resets."""
        sums, self.loss_sums = self.loss_sums, {}
        return sums
