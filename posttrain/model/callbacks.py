"""Trainer glue: the `TrainerCallback`s for any HF/TRL trainer running a DeepSeek-V3-architecture model.

`CheckpointFilesCallback` gives each saved `checkpoint-N` the released layout's MTP copies (`add_mtp_copies`) and the
released config keys (`write_released_keys`), or, for a LoRA adapter, the router biases outside the adapters
(`add_adapter_extras`).
After each optimizer step `MoETrainingCallback` pops the expert loads of the global batch (summed over
gradient-accumulation micro-batches, all-reduced over data-parallel ranks), applies the auxiliary-loss-free bias
update and keeps the router statistics; at each log it merges, averaged over the steps since the previous log:

    router/maxvio                   MaxVio averaged over MoE layers (report §2.1.2)
    router/maxvio/layer_{l}         per MoE layer l (MTP layers keep their checkpoint index)
    router/load/layer_{l}/expert_{e}  load / mean load, only with `log_expert_loads=True` (L x E scalars)
    mtp_loss                        mean over depths of the MTP cross-entropy (before lambda), when MTP trains
    seq_balance_loss                sum over layers of the sequence-wise balance loss (before alpha), when alpha > 0
    mtp/acceptance                  drafts accepted / made by `generate` with `speculative_generation` (rollouts)

The metrics reach the logs through `Trainer.log` (`posttrain.trainer_metrics`): a trainer with the
`LogsCallbackMetrics` mixin adds every `MetricsCallback`'s `metrics()` before `log_history` and the reporters
(TensorBoard, ...) see the logs. `posttrain.training.SFTTrainer` and `GRPOTrainer` are TRL's with the mixin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from posttrain.model.balance import update_bias
from posttrain.model.io import add_mtp_copies
from posttrain.model.lora import add_adapter_extras
from posttrain.model.released_config import write_released_keys
from posttrain.model.modeling import DeepseekV3MTPForCausalLM
from posttrain.model.router_stats import RouterLoads, max_violation
from posttrain.trainer_metrics import LogsCallbackMetrics, MetricsCallback

_LOSSES = ("mtp_loss", "seq_balance_loss")


def _our_model(model: nn.Module) -> DeepseekV3MTPForCausalLM | None:
    return next((m for m in model.modules() if isinstance(m, DeepseekV3MTPForCausalLM)), None)


class MoETrainingCallback(MetricsCallback):
    """Bias update (gamma) after each optimizer step, plus router, MTP and balance-loss metrics in the logs.

    >>> from posttrain.training import SFTTrainer
    >>> trainer = SFTTrainer(model=model, ..., callbacks=training_callbacks(model, gamma=1e-3))  # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module, gamma: float = 1e-3, log_expert_loads: bool = False, grad_scaler: Any = None
    ) -> None:
        self.loads = RouterLoads(model)
        self.grad_scaler = grad_scaler
        self.core = _our_model(model)
        self.gamma = gamma
        self.log_expert_loads = log_expert_loads
        self._reset()

    def _reset(self) -> None:
        self._steps = 0
        self._maxvio = torch.zeros(len(self.loads.routers), dtype=torch.float64)
        self._seen = torch.zeros(len(self.loads.routers), dtype=torch.float64)  # steps in which a layer routed
        self._fraction = None
        self._losses = torch.zeros(2 * len(_LOSSES), dtype=torch.float64)  # (sum, count) per loss

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.core is not None:  # trainers scale the main loss by 1/accumulation; do the same for the extras
            self.core.aux_grad_scale = 1.0 / args.gradient_accumulation_steps

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # fp16: the trainer backpropagates the scaled loss; the extras' gradient must carry the same scale
        if self.core is not None and self.grad_scaler is not None and self.grad_scaler.is_enabled():
            self.core.loss_scale = float(self.grad_scaler.get_scale())

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        sums = self.core.pop_loss_sums() if self.core is not None else {}
        zero = torch.zeros(2, dtype=torch.float64)
        local = torch.cat([sums[k].double().cpu() if k in sums else zero for k in _LOSSES])
        loads, losses = self.loads.pop(extra=local)  # one all-reduce for both
        if loads.sum() == 0:
            return
        if self.gamma > 0:
            update_bias(self.loads.routers, loads, self.gamma)
        self._steps += 1
        self._maxvio += max_violation(loads).cpu()
        self._seen += (loads.sum(dim=-1) > 0).cpu()  # e.g. MTP does not route when it does not train
        fraction = (loads / loads.mean(dim=-1, keepdim=True).clamp(min=1e-9)).cpu()
        self._fraction = fraction if self._fraction is None else self._fraction + fraction
        self._losses += losses.cpu()

    def metrics(self) -> dict[str, float]:
        """The metrics accumulated since the last call (empty if no optimizer step ran); resets."""
        if self._steps == 0:
            return {}
        seen = self._seen > 0
        maxvio = self._maxvio / self._seen.clamp(min=1)
        out = {"router/maxvio": maxvio[seen].mean().item()}
        for l, v, s in zip(self.loads.layer_ids, maxvio, seen, strict=True):
            if s:
                out[f"router/maxvio/layer_{l}"] = v.item()
        if self.log_expert_loads:
            fraction = self._fraction / self._seen.clamp(min=1).unsqueeze(-1)
            for l, row, s in zip(self.loads.layer_ids, fraction, seen, strict=True):
                if s:
                    out |= {f"router/load/layer_{l}/expert_{e}": v.item() for e, v in enumerate(row)}
        for i, name in enumerate(_LOSSES):
            total, count = self._losses[2 * i], self._losses[2 * i + 1]
            if count > 0:
                out[name] = (total / count).item()
        spec = self.core.pop_speculative_stats() if self.core is not None else None
        if spec is not None and spec.drafts:  # rollouts drafted since the last log
            out["mtp/acceptance"] = spec.acceptance
        self._reset()
        return out


class CheckpointFilesCallback(TrainerCallback):
    """Complete each `checkpoint-N` the Trainer saves for tools outside the run: full weights get the MTP copies of
    the embedding and head that `save_model` writes (the released layout vLLM's MTP loader reads); a LoRA adapter
    gets the router biases the bias update moved, so base + adapter equals the merged model and a resume keeps them.
    """

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        if args.should_save:  # the processes the Trainer wrote the checkpoint from
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if not add_mtp_copies(checkpoint) and model is not None:
                add_adapter_extras(checkpoint, model)
            write_released_keys(checkpoint)  # a no-op for an adapter dir (no DeepSeek-V3 config.json)


def training_callbacks(
    model: nn.Module, gamma: float = 1e-3, log_expert_loads: bool = False, grad_scaler: Any = None
) -> list[TrainerCallback]:
    """The callbacks a recipe passes to a `LogsCallbackMetrics` HF/TRL trainer (`callbacks=...`) for a DeepSeek-V3
    model.

    `gamma` is the bias update speed (report: 0.001, 0 for the last 500B tokens); 0 keeps the statistics only.
    `grad_scaler`: under fp16, the trainer's `accelerator.scaler` (`add_training_callbacks` passes it), so the MTP
    and balance losses' gradients are scaled like the main loss's.

    >>> from posttrain.model import load_model
    >>> callbacks = training_callbacks(load_model("tiny"), gamma=1e-3)
    >>> [type(c).__name__ for c in callbacks]
    ['MoETrainingCallback', 'CheckpointFilesCallback']
    """
    moe = MoETrainingCallback(model, gamma=gamma, log_expert_loads=log_expert_loads, grad_scaler=grad_scaler)
    return [moe, CheckpointFilesCallback()]


def add_training_callbacks(trainer: Trainer, gamma: float = 1e-3, log_expert_loads: bool = False) -> None:
    """Add the callbacks to a built `LogsCallbackMetrics` trainer (`Trainer.add_callback`).

    >>> trainer = SFTTrainer(model=model, args=args, train_dataset=data)  # doctest: +SKIP
    >>> add_training_callbacks(trainer, gamma=1e-3)                     # doctest: +SKIP
    """
    if not isinstance(trainer, LogsCallbackMetrics):
        raise TypeError(f"{type(trainer).__name__} would not log the router and MTP metrics: build the trainer with "
                        "posttrain.training.SFTTrainer / GRPOTrainer, or a class (LogsCallbackMetrics, YourTrainer)")
    callbacks = training_callbacks(trainer.model, gamma=gamma, log_expert_loads=log_expert_loads,
                                   grad_scaler=getattr(trainer.accelerator, "scaler", None))
    for callback in callbacks:
        trainer.add_callback(callback)
