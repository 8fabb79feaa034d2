"""Step-time overhead of posttrain's GRPO additions against a bare TRL `GRPOTrainer`, side by side in one process.

    python benchmarks/bench_grpo_overhead.py [--model CKPT] [--steps 12] [--rounds 3]

Both arms train the same model (same weights, same seed) on the same builtin arithmetic prompts with the same
GRPOConfig. The bare arm is what a TRL script would do: TRL's own `accuracy_reward` (math-verify in the trainer's
thread), no callbacks. Our arm: `rewards.get_reward("math")` (bounded verifier subprocesses) plus `format`
resolved from specs, the column check, the MoE balance callback (bias update, router metrics) and the reward
failure counter. Arms alternate (A B B A ...) for `rounds` rounds; the figure is the median of TRL's own `step_time` metric over
all steps but each run's first.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import trl
from trl import GRPOConfig
from trl.rewards import accuracy_reward, think_format_reward

import rewards
from data_tools import load_prompts
from posttrain.training import GRPOTrainer, ModelArguments, attach, build_model_and_tokenizer
from rewards.failure_callback import RewardFailuresCallback


def run_arm(ours: bool, model, tokenizer, dataset, steps: int, completion_len: int) -> list[float]:
    """Train a copy of `model` for `steps` steps; TRL's per-step wall times, first step dropped."""
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        per_device_train_batch_size=16, num_generations=8, max_completion_length=completion_len, max_steps=steps,
        logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0, learning_rate=1e-4,
    )
    if ours:
        funcs = [rewards.get_reward("math"), rewards.get_reward("format")]
        rewards.check_columns(funcs, dataset.column_names, rows=dataset)
        callbacks = [RewardFailuresCallback(funcs)]
    else:
        funcs, callbacks = [accuracy_reward, think_format_reward], []
    trainer_class = GRPOTrainer if ours else trl.GRPOTrainer
    trainer = trainer_class(model=copy.deepcopy(model), reward_funcs=funcs, args=args, train_dataset=dataset,
                                processing_class=tokenizer, callbacks=callbacks)
    if ours:
        attach(trainer, ModelArguments())
    trainer.train()
    return [h["step_time"] for h in trainer.state.log_history if "step_time" in h][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="Checkpoint dir or preset (default: random-init tiny).")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--completion_len", type=int, default=64)
    args = parser.parse_args()

    model, tokenizer = build_model_and_tokenizer(ModelArguments(model_name_or_path=args.model, mtp_loss_weight=0.0),
                                                 seed=0)
    dataset = load_prompts(tasks=["arithmetic"], n=512, seed=0)
    times = {"bare TRL": [], "posttrain": []}
    for round_ in range(args.rounds):
        for name in (list(times) if round_ % 2 == 0 else list(times)[::-1]):  # ABBA: drift hits both arms
            start = time.perf_counter()
            times[name] += run_arm(name == "posttrain", model, tokenizer, dataset, args.steps, args.completion_len)
            print(f"{name}: round done in {time.perf_counter() - start:.1f} s", flush=True)
    bare, ours = (statistics.median(times[k]) for k in ("bare TRL", "posttrain"))
    print(f"median step time: bare TRL {bare:.3f} s, posttrain {ours:.3f} s "
          f"({len(times['bare TRL'])} and {len(times['posttrain'])} steps)")
    print(f"overhead: {100 * (ours / bare - 1):+.1f}%")


if __name__ == "__main__":
    main()
