"""The running count of each reward's failures in the trainer's logs, as `rewards/<name>/failures`.

Rewards report each batch's failure rate themselves (`rewards.base.log_failure_rate`, through TRL's `log_metric`);
this callback adds the count so far (rows that raised or timed out, `Reward.stats`) to every log line of a
`LogsCallbackMetrics` trainer (`posttrain.trainer_metrics`; `posttrain.training.GRPOTrainer` is one). It lives in
its own module so `import rewards` stays free of transformers' Trainer.
"""

from __future__ import annotations

from posttrain.trainer_metrics import MetricsCallback
from rewards.base import failure_metric


class RewardFailuresCallback(MetricsCallback):
    """Log each reward's failure count (rows that raised or timed out) as `rewards/<name>/failures`."""

    def __init__(self, reward_funcs: list) -> None:
        self.reward_funcs = [f for f in reward_funcs if hasattr(f, "stats")]

    def metrics(self) -> dict[str, float]:
        return {failure_metric(f.__name__, "failures"): float(f.stats.failures) for f in self.reward_funcs}
