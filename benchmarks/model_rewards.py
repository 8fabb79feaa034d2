"""Model-based and self-made rewards side by side: no RL, GRPO with the rule reward, GRPO with a reward model
trained here, GRPO with `vote` (no labels), all from one SFT checkpoint on one prompt set.

    python benchmarks/model_rewards.py --sft outputs/tiny/sft/checkpoint-1000 --output out/model_rewards

Runs, in order (each step skipped when its output is complete, so a rerun after a kill continues):
1. `posttrain data preferences` with recipes/configs/tiny/preferences.yaml (the SFT policy's own samples, verified
   by the math reward, correct paired with incorrect), policy = `--sft`;
2. `recipes/reward_model.py` with recipes/configs/tiny/reward_model.yaml from `--sft` on those pairs;
3. `recipes/grpo.py` with recipes/configs/tiny/grpo.yaml from `--sft`, `--steps` steps, once per reward:
   `math` (rule), `reward_model` (the model of step 2 only), `vote` (no gold read);
4. held-out accuracy of the four policies (greedy pass@1 on the builtin arithmetic held-out split, scored by the
   rule checker, which the model-based runs never see) with binomial standard errors, and the evidence for what
   each reward taught: the reward model's pairwise accuracy on each policy's own held-out samples (4 per prompt,
   correct vs incorrect answers of the same prompt) and `vote`'s pseudo-label accuracy over its run.
Writes `<output>/model_rewards.md` (the table), `<output>/model_rewards.png` (accuracy with error bars) and
`<output>/model_rewards.json` (the figures, with each stage's wall seconds from `<output>/wall_s.json`).
`--cpu_threads N` holds every step to N torch threads: the launched recipes, the preference sampling and the evals.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

from eval.metrics import paired_difference
from posttrain.cpu_threads import set_cpu_threads

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs" / "tiny"


def run(cmd: list[str], threads: str | None = None) -> None:
    """Run a step as a user would, from the repo root, one process with the machine's cores (`threads` of them
    when given: OMP_NUM_THREADS, which torch reads at start, so steps with no --cpu_threads option keep it too)."""
    print("+", " ".join(cmd), flush=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **({"OMP_NUM_THREADS": threads} if threads else {})}
    subprocess.run(cmd, check=True, cwd=REPO, env=env)


def record_wall(out: Path, stage: str, start: float) -> None:
    """Add a stage's wall seconds since `start` to `<out>/wall_s.json` (kept across reruns: a skipped stage keeps
    the time it took when it ran)."""
    path = out / "wall_s.json"
    walls = json.loads(path.read_text()) if path.is_file() else {}
    walls[stage] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(walls, indent=2))


def launch(recipe: str, *args: str) -> list[str]:
    """`accelerate launch` of a recipe on one CPU process."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "no",
            str(REPO / "recipes" / f"{recipe}.py"), *args]


def pairwise_accuracy(scores: list[float], correct: list[bool], problems: list[int]) -> tuple[float, int]:
    """Share of (correct, incorrect) sample pairs of one problem that the scores order right (ties count half)."""
    wins, pairs = 0.0, 0
    by_problem: dict[int, list[tuple[float, bool]]] = {}
    for s, c, p in zip(scores, correct, problems, strict=True):
        by_problem.setdefault(p, []).append((s, c))
    for samples in by_problem.values():
        for (a, ca), (b, cb) in product(samples, samples):
            if ca and not cb:
                pairs += 1
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return (wins / pairs if pairs else float("nan")), pairs


def ends(values: list[float]) -> dict[str, float] | None:
    """Means of the first and the last fifth of a logged series (None when empty)."""
    if not values:
        return None
    k = max(1, len(values) // 5)
    return {"first": sum(values[:k]) / k, "last": sum(values[-k:]) / k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", required=True, help="The SFT checkpoint every run starts from.")
    parser.add_argument("--output", required=True, help="Where the runs, evals, table and plot go.")
    parser.add_argument("--steps", type=int, default=320, help="GRPO steps per run (grpo.yaml's default).")
    parser.add_argument("--prompts", type=int, default=1000, help="Prompts sampled for the preference pairs.")
    parser.add_argument("--limit", type=int, default=1000, help="Held-out rows scored per policy.")
    parser.add_argument("--own_samples", type=int, default=200, help="Held-out prompts x 4 samples for the reward "
                        "model's accuracy on each policy's own answers.")
    parser.add_argument("--rm_epochs", type=float, default=None, help="Reward-model epochs (default: the config's).")
    parser.add_argument("--cpu_threads", default=None, help="torch threads of every launched run (default: the "
                        "configs' 'auto'); 1 on a machine shared with other jobs.")
    args, extra = parser.parse_known_args()  # anything else goes to every GRPO run, e.g. --learning_rate 1e-4

    threads = ["--cpu_threads", args.cpu_threads] if args.cpu_threads else []
    set_cpu_threads(args.cpu_threads)  # the evals below run in this process
    out = Path(args.output).resolve()
    prefs, rm = out / "preferences", out / "reward_model"
    fresh, start = not (prefs / "COMPLETE").is_file(), time.perf_counter()
    run([sys.executable, "-m", "posttrain.app.cli", "data", "preferences", "--config",
         str(CONFIGS / "preferences.yaml"), f"output_dir={prefs}", f"policy.model={args.sft}",
         f"prompts=[{{builtin: arithmetic, rows: {args.prompts}, seed: 0, split: train}}]"], args.cpu_threads)
    if fresh:  # a complete run returns at once (same config) and keeps its recorded time
        record_wall(out, "preferences", start)
    if not (rm / "final" / "reward_eval.json").is_file():
        start = time.perf_counter()
        epochs = ["--num_train_epochs", str(args.rm_epochs)] if args.rm_epochs else []
        run(launch("reward_model", "--config", str(CONFIGS / "reward_model.yaml"), "--model_name_or_path", args.sft,
                   "--dataset_path", str(prefs), "--output_dir", str(rm), "--report_to", "none",
                   "--disable_tqdm", "true", *epochs, *threads), args.cpu_threads)
        record_wall(out, "reward_model", start)
    rewards = {"rule (math)": "math",
               "reward model only": json.dumps({"name": "reward_model", "model": str(rm / "final")}),
               "vote only (no labels)": "vote"}
    runs = {}
    for label, spec in rewards.items():
        run_dir = out / ("grpo_" + label.split()[0].replace("reward", "rm"))
        runs[label] = run_dir
        if not (run_dir / "final" / "config.json").is_file():
            start = time.perf_counter()
            run(launch("grpo", "--config", str(CONFIGS / "grpo.yaml"), "--model_name_or_path", args.sft,
                       "--output_dir", str(run_dir), "--max_steps", str(args.steps), "--save_steps",
                       str(args.steps), "--reward_funcs", spec, "--reward_weights", "1", "--report_to", "none",
                       "--disable_tqdm", "true", *threads, *extra), args.cpu_threads)
            record_wall(out, run_dir.name, start)
    report(args, out, rm, runs)


def report(args: argparse.Namespace, out: Path, rm: Path, runs: dict[str, Path]) -> None:
    """Evaluate the four policies and write the table and the plot."""
    import eval as evaluation
    from rewards import get_reward

    policies = {"no RL (SFT)": Path(args.sft), **{k: v / "final" for k, v in runs.items()}}
    start = time.perf_counter()
    greedy = evaluation.evaluate(list(policies.values()), ["arithmetic"], limit=args.limit, max_new_tokens=160,
                                 batch_size=100, output_dir=out / "eval")
    record_wall(out, "eval_greedy", start)
    start = time.perf_counter()
    own = evaluation.evaluate(list(policies.values()), ["arithmetic"], limit=args.own_samples, num_samples=4,
                              temperature=1.0, max_new_tokens=160, batch_size=50, output_dir=out / "eval_sampled")
    record_wall(out, "eval_sampled", start)
    scorer = get_reward({"name": "reward_model", "model": str(rm / "final"), "batch_size": 64})
    held_out_rm = json.loads((rm / "final" / "reward_eval.json").read_text())
    base = {s["problem"]: s["correct"] for s in greedy[0].samples}
    rows = []
    for (label, path), result, sampled in zip(policies.items(), greedy, own, strict=True):
        n, acc = len(result.samples), result.metrics["pass@1"]
        gain, gain_se = paired_difference([(s["correct"], base[s["problem"]]) for s in result.samples])
        samples = sampled.samples
        scores = scorer(prompts=[s["prompt"] for s in samples], completions=[s["completion"] for s in samples])
        rm_acc, pairs = pairwise_accuracy(scores, [s["correct"] for s in samples], [s["problem"] for s in samples])
        rows.append({"policy": label, "n": n, "accuracy": acc, "se": math.sqrt(acc * (1 - acc) / n),
                     "gain": gain, "gain_se": gain_se, "sampled_accuracy": sampled.metrics["pass@1"],
                     "sampled_no_answer": sum(s["answer"] is None for s in samples) / len(samples),
                     "sampled_tokens": sum(s["response_tokens"] or 0 for s in samples) / len(samples),
                     "rm_pairwise": rm_acc, "rm_pairs": pairs, "checkpoint": str(path)})
    history = {label: json.loads((run_dir / f"checkpoint-{args.steps}" / "trainer_state.json").read_text())
               ["log_history"] for label, run_dir in runs.items()}
    training_reward = {label: ends([h["reward"] for h in logs if "reward" in h]) for label, logs in history.items()}
    vote_log = history["vote only (no labels)"]
    summary = {"rows": rows, "reward_model_heldout": held_out_rm, "training_reward": training_reward,
               **{f"vote_{key}": ends([h[f"vote/{key}"] for h in vote_log if f"vote/{key}" in h])
                  for key in ("label_accuracy", "share", "labelled")},
               "steps": args.steps, "wall_s": json.loads((out / "wall_s.json").read_text())}
    (out / "model_rewards.json").write_text(json.dumps(summary, indent=2))
    lines = ["| policy | held-out pass@1 (greedy) | n | s.e. | change vs no RL (paired s.e.) | sampled pass@1 (T=1) "
             "| sampled: no answer, mean tokens | reward model's pairwise accuracy on this policy's samples (pairs) "
             "| training reward (first, last 20%) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        trend = training_reward.get(r["policy"])
        lines.append(f"| {r['policy']} | {r['accuracy']:.3f} | {r['n']} | {r['se']:.3f} | "
                     f"{r['gain']:+.3f} ({r['gain_se']:.3f}) | {r['sampled_accuracy']:.3f} | "
                     f"{r['sampled_no_answer']:.3f}, {r['sampled_tokens']:.1f} | "
                     f"{r['rm_pairwise']:.3f} ({r['rm_pairs']}) | "
                     + (f"{trend['first']:.3f} -> {trend['last']:.3f} |" if trend else "|"))
    vote = {key: summary[f"vote_{key}"] for key in ("label_accuracy", "share", "labelled")}
    lines += ["", f"Reward model on its held-out pairs: accuracy {held_out_rm.get('eval_accuracy', float('nan')):.3f} "
              f"({held_out_rm['pairs']} pairs). vote over its run (first 20% of logged steps -> last 20%): "
              + "; ".join(f"{key} {v['first']:.3f} -> {v['last']:.3f}" for key, v in vote.items() if v) + "."]
    (out / "model_rewards.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, out / "model_rewards.png")


def plot(rows: list[dict], path: Path) -> None:
    """Held-out accuracy per policy with 1 s.e. error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(rows)), [r["accuracy"] for r in rows], yerr=[r["se"] for r in rows], capsize=6,
           color=["#999999", "#4c72b0", "#dd8452", "#55a868"][: len(rows)])
    ax.set_xticks(range(len(rows)), [r["policy"] for r in rows], fontsize=8)
    ax.set_ylabel("held-out arithmetic pass@1 (greedy)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
