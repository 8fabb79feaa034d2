"""Metrics of our callbacks in a trainer's logs, through `Trainer.log`, the trainer's documented place for them.

`Trainer.log` records a log in `state.log_history` and hands it to the reporting callbacks (TensorBoard, ...)
before any callback added by the user runs; TRL's trainers add their own metrics by overriding it. A trainer
with the `LogsCallbackMetrics` mixin does the same for every `MetricsCallback` it holds: the router and MTP
metrics (`posttrain.model.callbacks`) and the reward failure counts (`rewards.failure_callback`).
`posttrain.training.SFTTrainer` and `GRPOTrainer` are TRL's trainers with the mixin.
"""

from __future__ import annotations

from transformers import TrainerCallback


class MetricsCallback(TrainerCallback):
    """A callback with metrics to log: a `LogsCallbackMetrics` trainer adds its `metrics()` to every log."""

    def metrics(self) -> dict[str, float]:
        """The metrics to add to the log being written; called once per log."""
        raise NotImplementedError


class LogsCallbackMetrics:
    """Trainer mixin (`class MyTrainer(LogsCallbackMetrics, Trainer)`): each log also carries the metrics of the
    trainer's `MetricsCallback`s, in `state.log_history` and in what every reporting callback gets."""

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, MetricsCallback):
                logs.update(callback.metrics())
        super().log(logs, start_time)
