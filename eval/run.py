"""Score checkpoints on math and code benchmarks: pass@k, maj@k, mean reward, response length; report and plot.

Examples:
  python eval/run.py --model runs/sft --benchmark gsm8k:../shared/data/gsm8k/test.jsonl --limit 200 --output out/
  python eval/run.py --model runs/grpo/checkpoint-* --benchmark humaneval --num_samples 8 --k 1,8 --output out/

Writes OUTPUT/results.json (per-sample records and aggregates), OUTPUT/report.md (checkpoint x benchmark tables)
and OUTPUT/plot.png (bars per checkpoint, or a curve over steps for checkpoint-<step> directories).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.benchmarks import known_benchmarks
from eval.harness import EVAL_BACKENDS, evaluate
from eval.report import headline_metrics
from posttrain.errors import exit_on_user_error


def parse_ks(text: str) -> list[int]:
    """The value of `--k`: comma-separated integers >= 1.

    >>> parse_ks("1,8")
    [1, 8]
    """
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k takes comma-separated integers such as 1,8; got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--k values must be >= 1; got {text!r}")
    return ks


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option maps onto an `eval.evaluate` argument."""
    parser = argparse.ArgumentParser(
        prog="python eval/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", nargs="+", action="extend", required=True, metavar="CKPT",
                        help="checkpoint directory (HF format); repeatable. A run directory without config.json "
                             "stands for all its checkpoint-<step> directories.")
    parser.add_argument("--benchmark", nargs="+", action="extend", required=True, metavar="NAME",
                        help=f"repeatable: one of {', '.join(known_benchmarks())}; gsm8k:PATH or humaneval:PATH "
                             "for a local copy (plain gsm8k downloads openai/gsm8k); or a .jsonl file with "
                             "'prompt' and 'solution' (math) or 'tests' and 'entry_point' (code).")
    parser.add_argument("--num_samples", type=int, default=1, help="samples per prompt (default 1: greedy)")
    parser.add_argument("--k", type=parse_ks, default=[1], help="comma-separated k for pass@k / maj@k, each "
                                                                 "<= --num_samples (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows of each benchmark")
    parser.add_argument("--output", type=Path, required=True, help="directory for results.json, report.md, plot.png")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature; default 0 (greedy) for one sample, 0.6 for several")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling (default 1.0: off)")
    parser.add_argument("--max_new_tokens", type=int, default=512, help="generation budget per sample (default 512)")
    parser.add_argument("--batch_size", type=int, default=16,
                        help="prompts per HF generate call, each with --num_samples sequences (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, reset per checkpoint x benchmark")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--backend", choices=EVAL_BACKENDS, default="hf", help="hf generate (default) or vllm (optional)")
    parser.add_argument("--speculative", action="store_true",
                        help="decode with the checkpoint's MTP module as drafter (same output, fewer main steps)")
    parser.add_argument("--prompt_template", default=None,
                        help="template for every benchmark's prompts; {prompt} is replaced by the row's prompt. "
                             "Default: gsm8k and humaneval have their own, other benchmarks use prompts unchanged.")
    parser.add_argument("--no_chat_template", dest="chat_template", action="store_false", default=None,
                        help="feed prompts as raw text even when the tokenizer has a chat template")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, evaluate, print the headline numbers; user errors exit with status 2 and one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with exit_on_user_error(parser.prog):
        results = evaluate(
            args.model, args.benchmark, num_samples=args.num_samples, k=args.k, limit=args.limit,
            output_dir=args.output, temperature=args.temperature, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed, device=args.device,
            backend=args.backend, prompt_template=args.prompt_template, chat_template=args.chat_template,
            speculative=args.speculative,
        )
    for result in results:
        shown = ", ".join(f"{m}={result.metrics[m]:.3f}" for m in headline_metrics([result]))
        print(f"{result.model}  {result.benchmark}: {shown}")
    print(f"wrote {args.output / 'results.json'}, report.md, plot.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
