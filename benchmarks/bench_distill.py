"""Samples/s of the distillation `hf` teacher backend: batched prompts against one prompt at a time, same run.

    python benchmarks/bench_distill.py [--model CKPT] [--prompts 64] [--n 4] [--batch_size 16] [--max_new_tokens 64]

Both arms call `HFBackend.generate` (which calls `posttrain.generation.generate`) on the same builtin arithmetic prompts
with the same sampling parameters; only `teacher.batch_size` differs (B prompts x n samples per `generate` call vs
1 prompt x n samples). Without `--model` a random-init tiny checkpoint is written to a temporary dir (it never
stops early, so both arms generate exactly prompts x n x max_new_tokens tokens). One warm-up call runs first.
Prints a JSON line and a markdown row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="teacher checkpoint dir (default: random-init tiny, written to a temp dir)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--batch_size", type=int, default=16, help="prompts per generate call in the batched arm")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    args = parser.parse_args(argv)

    import torch

    from data_tools.distill import HFBackend, SamplingConfig, TeacherConfig
    from data_tools.generators import generate

    torch.set_num_threads(args.threads)
    model = args.model
    if model is None:
        from posttrain.model import load_model, save_model
        from posttrain.tokenizer import build_tokenizer

        torch.manual_seed(0)
        model = str(save_model(load_model("tiny"), build_tokenizer(), Path(tempfile.mkdtemp()) / "tiny"))
    sampling = SamplingConfig(n=args.n, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    conversations = [[{"role": "user", "content": r["prompt"]}] for r in generate("arithmetic", args.prompts, seed=1)]
    counts = [args.n] * len(conversations)

    results = {}
    for arm, batch_size in (("batched", args.batch_size), ("one_prompt_at_a_time", 1)):
        backend = HFBackend(TeacherConfig(model=model, device=args.device, batch_size=batch_size), sampling)
        backend.generate(conversations[:1], [args.n], seed=0)  # warm-up
        start = time.perf_counter()
        out = backend.generate(conversations, counts, seed=0)
        seconds = time.perf_counter() - start
        samples = sum(len(s) for s in out)
        tokens = sum(g.num_tokens or 0 for s in out for g in s)
        results[arm] = {"batch_size": batch_size, "seconds": round(seconds, 2), "samples": samples,
                        "samples_per_s": round(samples / seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}
        backend.close()
    ratio = results["batched"]["samples_per_s"] / results["one_prompt_at_a_time"]["samples_per_s"]
    report = {"model": model if args.model else "random-init tiny", "device": args.device, "threads": args.threads,
              "prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens, **results,
              "speedup": round(ratio, 2)}
    print(json.dumps(report))
    b, s = results["batched"], results["one_prompt_at_a_time"]
    print(f"| {report['model']} | {args.device} x{args.threads} | {args.prompts} x {args.n} | {args.max_new_tokens} | "
          f"{b['samples_per_s']} (B={args.batch_size}) | {s['samples_per_s']} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
