"""Does GRPO learn? Held-out accuracy and reward over a GRPO run from an SFT checkpoint, as a table and a PNG.

    python benchmarks/grpo_learning.py --sft outputs/tiny/sft/checkpoint-1000 --output out/grpo_learning

Runs `recipes/grpo.py` with `recipes/configs/tiny/grpo.yaml` (checkpoints every `--save_steps`), then scores the
SFT checkpoint and every GRPO checkpoint with `eval.evaluate` (greedy pass@1 on the builtin arithmetic held-out
split, scored by the rewards package), and plots the training reward and the held-out accuracy against the step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", required=True, help="The SFT checkpoint GRPO starts from.")
    parser.add_argument("--output", required=True, help="Where the GRPO run, eval and plot go.")
    parser.add_argument("--config", default=str(REPO / "recipes/configs/tiny/grpo.yaml"))
    parser.add_argument("--max_steps", type=int, help="Default: the config's.")
    parser.add_argument("--save_steps", type=int, help="Default: the config's.")
    parser.add_argument("--limit", type=int, default=1000, help="Held-out rows scored per checkpoint.")
    args, extra = parser.parse_known_args()  # anything else goes to the recipe, e.g. --learning_rate 1e-4

    import eval as evaluation
    from posttrain.cpu_threads import launch_threads

    out = Path(args.output)
    steps_args = []
    for key in ("max_steps", "save_steps"):
        if getattr(args, key) is not None:
            steps_args += [f"--{key}", str(getattr(args, key))]
    run = out / "grpo"
    launched = time.time()  # wall clock: the checkpoints' write times below are measured against it
    subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "no",
         "--num_cpu_threads_per_process", str(launch_threads(1)),
         str(REPO / "recipes/grpo.py"), "--config", args.config, "--model_name_or_path", args.sft,
         "--output_dir", str(run), *steps_args, "--save_total_limit", "100", "--disable_tqdm", "true", *extra],
        check=True, cwd=REPO, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    train_s = time.time() - launched
    results = evaluation.evaluate([args.sft, run], ["arithmetic"], limit=args.limit, max_new_tokens=160,
                                  batch_size=100, output_dir=out / "eval")
    steps = [0] + [r.step for r in results[1:]]
    accuracy = [r.metrics["pass@1"] for r in results]
    history = json.loads((run / f"checkpoint-{steps[-1]}" / "trainer_state.json").read_text())["log_history"]
    reward = [(h["step"], h["rewards/math/mean"]) for h in history if "rewards/math/mean" in h]

    # When each checkpoint was complete, counted from the launch (model loading included).
    written = [0.0] + [(run / f"checkpoint-{s}" / "trainer_state.json").stat().st_mtime - launched for s in steps[1:]]
    print(f"GRPO: {steps[-1]} steps in {train_s:.0f} s")
    print("| step | written after | held-out arithmetic pass@1 |\n|---|---|---|")
    for step, seconds, acc in zip(steps, written, accuracy, strict=True):
        print(f"| {step} | {seconds:.0f} s | {acc:.3f} |")
    print(f"gain: {100 * (max(accuracy[1:]) - accuracy[0]):+.1f} points (best checkpoint), "
          f"{100 * (accuracy[-1] - accuracy[0]):+.1f} (last)")
    plot(steps, accuracy, reward, out / "grpo_learning.png")


def plot(steps: list[int], accuracy: list[float], reward: list[tuple[int, float]], path: Path) -> None:
    """Training reward (math, per step) and held-out accuracy (per checkpoint) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([s for s, _ in reward], [r for _, r in reward], alpha=0.5, label="training reward (math, mean)")
    ax.plot(steps, accuracy, marker="o", linewidth=2, label="held-out arithmetic pass@1 (greedy)")
    ax.set_xlabel("GRPO step")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
